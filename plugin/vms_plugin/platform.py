"""The vLLM platform that selects the MindSpore worker.

It is vLLM's CPU platform with one change made in `check_and_update_config`: the worker class. It reports
itself as CPU (`is_cpu()`) so vLLM keeps its CPU conventions (gloo, spawn, memory accounting), and as an
out-of-tree platform so that it wins over the built-in one.
"""

import logging
import os
from typing import TYPE_CHECKING

from vllm.platforms.cpu import CpuPlatform
from vllm.platforms.interface import PlatformEnum
from vllm.utils.cpu_resource_utils import get_visible_memory_node

from vms_plugin import START_METHOD_VARIABLE
from vms_plugin.cpu_binding import bind_ranks_to_cores
from vms_plugin.engine_features import refusal
from vms_plugin.worker.device import RAY_RANK_RESOURCE, device_control_variable

if TYPE_CHECKING:  # vllm.config imports the current platform while it initialises: no runtime import here
    from vllm.config import VllmConfig

logger = logging.getLogger("vllm." + __name__)

WORKER_CLASS = "vms_plugin.worker.worker.MindSporeWorker"
VLLM_CPU_WORKER_CLASS = "vllm.v1.worker.cpu_worker.CPUWorker"


def refuse_unsupported_features(vllm_config: "VllmConfig") -> None:
    """Fail at start-up, naming the flag, rather than on the first request that uses a feature the runner lacks
    (an exception in a step ends the engine core and every request in it): engine_features.py lists them."""
    message = refusal(vllm_config)
    if message is not None:
        raise ValueError(message)
    if vllm_config.model_config is not None:
        from vms_plugin.quantization import model_int8_scheme

        model_int8_scheme(vllm_config)


class MindSporePlatform(CpuPlatform):
    _enum = PlatformEnum.OOT
    device_name: str = "cpu"
    device_type: str = "cpu"
    # vLLM's Ray executor places one rank on one unit of this resource (see vms_plugin/worker/device.py).
    ray_device_key: str = RAY_RANK_RESOURCE
    # On Ascend, vLLM maps each rank's local rank to a visible NPU through this variable (Ray sets it per rank).
    device_control_env_var: str = device_control_variable(os.environ, CpuPlatform.device_control_env_var)

    def is_cpu(self) -> bool:
        return True

    @classmethod
    def pre_register_and_update(cls, parser=None) -> None:
        from vms_plugin import quantization  # imports vLLM's quantization package, which imports this platform

        quantization.register()

    @classmethod
    def verify_quantization(cls, quant: str) -> None:
        from vms_plugin.quantization import SUPPORTED_METHODS, unsupported_method

        if quant not in SUPPORTED_METHODS:
            raise unsupported_method(quant)

    @classmethod
    def register_triton_kernel_overrides(cls) -> None:
        super().register_triton_kernel_overrides()
        from vllm.triton_utils import HAS_TRITON

        if not HAS_TRITON:  # vLLM registered its CPU stand-ins; one of them is replaced (see sampling_kernels.py)
            from vms_plugin import sampling_kernels

            sampling_kernels.register()

    @classmethod
    def check_and_update_config(cls, vllm_config: "VllmConfig") -> None:
        refuse_unsupported_features(vllm_config)
        parallel_config = vllm_config.parallel_config
        chosen_by_user = parallel_config.worker_cls not in ("auto", VLLM_CPU_WORKER_CLASS)
        executor_backend = parallel_config.distributed_executor_backend
        start_method = os.environ.get(START_METHOD_VARIABLE)
        if executor_backend != "ray":  # Ray's ranks are not started by vLLM's core binding, nor all on this host
            bind_ranks_to_cores(parallel_config.local_world_size, len(get_visible_memory_node()))
        scheduling = _chunking_and_prefix_caching(vllm_config)
        super().check_and_update_config(vllm_config)
        # vLLM's CPU platform turns chunked prefill and prefix caching off for latent attention (its own CPU MLA
        # kernels lack them); vms's latent attention reads any cached context, so the user's choices stand.
        _restore_chunking_and_prefix_caching(vllm_config, scheduling)
        if vllm_config.speculative_config is not None and vllm_config.scheduler_config.async_scheduling:
            # The runner proposes after each step and the engine core takes the proposals between steps
            # (take_draft_token_ids), which vLLM does when it schedules one step at a time.
            logger.info("vms_plugin: speculative decoding schedules one step at a time (no async scheduling)")
            vllm_config.scheduler_config.async_scheduling = False
        if start_method is not None:
            # vLLM's CPU platform forces `spawn` for torch's sake; a method chosen before (by the user, vLLM's CLI
            # or `vms serve`, which forks the engine core: see vms_supervisor/engine_command.py) stands.
            os.environ[START_METHOD_VARIABLE] = start_method
        if executor_backend == "uni":
            # vLLM's CPU platform moves a single worker into its own process so that torch's OpenMP threads can be
            # pinned; the engine core then spins on a core while it waits for each step. MindSpore needs no such
            # pinning, so the worker stays in the engine core's process and every core computes.
            parallel_config.distributed_executor_backend = "uni"
        if not chosen_by_user:
            parallel_config.worker_cls = WORKER_CLASS


def _chunking_and_prefix_caching(vllm_config: "VllmConfig") -> tuple[bool, bool, int]:
    scheduler = vllm_config.scheduler_config
    return (
        scheduler.enable_chunked_prefill,
        vllm_config.cache_config.enable_prefix_caching,
        scheduler.max_num_batched_tokens,
    )


def _restore_chunking_and_prefix_caching(vllm_config: "VllmConfig", choices: tuple[bool, bool, int]) -> None:
    scheduler = vllm_config.scheduler_config
    scheduler.enable_chunked_prefill, vllm_config.cache_config.enable_prefix_caching, batched = choices
    scheduler.max_num_batched_tokens = batched
