"""vLLM worker that runs the model in MindSpore.

vLLM's engine core calls, in order: init_device, load_model, get_kv_cache_spec, determine_available_memory,
initialize_from_config, compile_or_warm_up_model, get_supported_tasks, then execute_model + sample_tokens per
step. torch appears here only because vLLM's interfaces speak it (the KV cache spec's dtype, the process group).
"""

import logging
import os
import time
from pathlib import Path

import mindspore as ms
import psutil
import torch
from vllm.config import VllmConfig
from vllm.lora.request import LoRARequest
from vllm.platforms.interface import set_assigned_physical_gpu_ids
from vllm.tasks import SupportedTask
from vllm.utils.mem_utils import format_gib
from vllm.utils.torch_utils import set_random_seed
from vllm.v1.core.sched.output import GrammarOutput, SchedulerOutput
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheSpec, MLAAttentionSpec
from vllm.v1.kv_cache_layout import KVCacheLayout
from vllm.v1.outputs import DraftTokenIds, ModelRunnerOutput
from vllm.v1.worker.gpu_worker import init_worker_distributed_environment
from vllm.v1.worker.worker_base import CompilationTimes, WorkerBase

from vms_plugin.layers.latent_attention import LatentAttention
from vms_plugin.worker.device import worker_device
from vms_plugin.worker.kv_budget import check_fits_one_sequence
from vms_plugin.worker.model_runner import MindSporeModelRunner

logger = logging.getLogger("vllm." + __name__)


def distributed_ident(init_method: str) -> str:
    """What names one engine's shared-memory segments (vLLM's CPU communicator): the shared memory this rank sees
    and the engine (the file of a file:// init method, else its port). Ranks that cannot share memory (on other
    machines, in other containers: Ray) get other names, and vLLM's communicator, which requires every rank of a
    group to agree on the name, then reduces through torch.distributed instead."""
    engine = init_method.split(":")[-1]
    if init_method.startswith("file://"):
        engine = os.path.basename(init_method.removeprefix("file://"))
    return f"{shared_memory_id()}-{engine}"


def shared_memory_id() -> str:
    """The same for processes that share /dev/shm: the kernel's boot (one per machine) and the /dev/shm mount (one
    per container)."""
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().split("-")[0]
    return f"{boot}-{os.stat('/dev/shm').st_dev}"


class MindSporeWorker(WorkerBase):
    def __init__(
        self,
        vllm_config: VllmConfig,
        local_rank: int,
        rank: int,
        distributed_init_method: str,
        is_driver_worker: bool = False,
    ) -> None:
        super().__init__(vllm_config, local_rank, rank, distributed_init_method, is_driver_worker)
        self.model_runner: MindSporeModelRunner | None = None

    def init_device(self) -> None:
        self.device = torch.device("cpu")  # where vLLM's tensors live: the host, whatever MindSpore computes on
        if self.parallel_config.assigned_physical_gpu_ids is not None:
            # The NPUs of this rank's replica, or those Ray gave this node's ranks: vLLM's GPU worker publishes them
            # the same way before mapping its local rank to a device.
            set_assigned_physical_gpu_ids(self.parallel_config.assigned_physical_gpu_ids)
        device = worker_device(
            self.local_rank, os.environ, self.current_platform.logical_device_id_to_visible_device_id
        )
        ms.set_device(device.target, device.device_id)
        # Synchronous op launch: on a few cores MindSpore's asynchronous dispatch thread competes with the compute
        # threads and made small ops 2-10x slower in measurements on a 2-core host.
        ms.runtime.launch_blocking()
        # vLLM's CPU communicator names its shared-memory segments after this (as vLLM's own CPU worker sets it).
        os.environ["VLLM_DIST_IDENT"] = distributed_ident(self.distributed_init_method)
        init_worker_distributed_environment(
            self.vllm_config,
            self.rank,
            self.distributed_init_method,
            self.local_rank,
            self.current_platform.dist_backend,
        )
        set_random_seed(self.model_config.seed)  # every rank samples, and must draw the same tokens
        self.model_runner = MindSporeModelRunner(self.vllm_config, device)
        logger.info(
            "vms_plugin: MindSpore %s on %s (platform %s, pid %d)",
            ms.__version__,
            ms.get_context("device_target"),
            type(self.current_platform).__name__,
            os.getpid(),
        )

    def load_model(self, *, load_dummy_weights: bool = False) -> None:
        if load_dummy_weights:
            raise ValueError("vms_plugin cannot load dummy weights; give it a model directory")
        started = time.perf_counter()
        self.model_runner.load_model()
        logger.info("vms_plugin: model loaded in %.1f s", time.perf_counter() - started)

    def get_model(self):
        return self.model_runner.model

    def get_kv_cache_spec(self) -> dict[str, KVCacheSpec]:
        """The model's layers, then a draft model's (speculative decoding), which vLLM gives one block table: the
        draft caches its tokens in the same blocks."""
        runner = self.model_runner
        specs = {
            f"model.layers.{index}.self_attn": self._spec(layer)
            for index, layer in enumerate(runner.model.attention_layers())
        }
        draft = [] if runner.drafter is None else runner.drafter.attention_layers()
        specs.update({f"draft.model.layers.{index}.self_attn": self._spec(layer) for index, layer in enumerate(draft)})
        if draft and len({type(spec) for spec in specs.values()}) > 1:
            raise ValueError(
                "a draft model whose attention differs in kind from the model's (latent attention beside grouped "
                "heads) is not supported; use --speculative-config method ngram"
            )
        return specs

    def _spec(self, layer) -> KVCacheSpec:
        block_size, dtype = self.cache_config.block_size, self.model_config.dtype  # weights and cache share it
        if isinstance(layer, LatentAttention):  # one latent row per token, which every head reads
            return MLAAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=layer.latent_width, dtype=dtype)
        _, kv_heads, head_size = layer.heads  # this rank's KV heads
        return FullAttentionSpec(block_size=block_size, num_kv_heads=kv_heads, head_size=head_size, dtype=dtype)

    def determine_available_memory(self) -> int:
        """Bytes for the KV cache, checked to hold at least one full-length sequence."""
        kv_bytes = self._kv_cache_budget()
        bytes_per_block = sum(spec.page_size_bytes for spec in self.get_kv_cache_spec().values())
        check_fits_one_sequence(
            kv_bytes, bytes_per_block, self.cache_config.block_size, self.model_config.max_model_len
        )
        return kv_bytes

    def _kv_cache_budget(self) -> int:
        """The explicit size if given (per rank, as vLLM's flag), else this rank's share of the configured fraction
        of RAM, which the ranks and data-parallel replicas on this host divide, minus what this process uses."""
        explicit = self.cache_config.kv_cache_memory_bytes
        memory = psutil.virtual_memory()
        if explicit is not None:
            if explicit > memory.available:
                raise ValueError(
                    f"KV cache of {format_gib(explicit)} GiB requested but only {format_gib(memory.available)} GiB "
                    "of memory is available; lower --kv-cache-memory-bytes / VLLM_CPU_KVCACHE_SPACE"
                )
            return explicit
        parallel = self.parallel_config
        processes_here = parallel.local_world_size * max(parallel.data_parallel_size_local, 1)
        budget = int(memory.total * self.cache_config.gpu_memory_utilization / processes_here)
        used = psutil.Process(os.getpid()).memory_info().rss
        if budget - used <= 0:
            raise ValueError(
                f"no memory left for the KV cache: --gpu-memory-utilization {self.cache_config.gpu_memory_utilization}"
                f" of {format_gib(memory.total)} GiB is {format_gib(budget)} GiB and the model already uses "
                f"{format_gib(used)} GiB; raise it or set --kv-cache-memory-bytes"
            )
        return min(budget - used, memory.available)

    def initialize_from_config(self, kv_cache_config: KVCacheConfig) -> None:
        started = time.perf_counter()
        self.model_runner.allocate_kv_cache(kv_cache_config.num_blocks)
        logger.info(
            "vms_plugin: KV cache of %d blocks x %d tokens allocated in %.1f s",
            kv_cache_config.num_blocks,
            self.cache_config.block_size,
            time.perf_counter() - started,
        )

    def compile_or_warm_up_model(self) -> CompilationTimes:
        started = time.perf_counter()
        self.model_runner.warm_up()
        seconds = time.perf_counter() - started
        logger.info("vms_plugin: model and sampler warmed up in %.1f s", seconds)
        return CompilationTimes(language_model=seconds, encoder=0.0)

    def get_supported_tasks(self) -> tuple[SupportedTask, ...]:
        pooling = self.model_runner.pooling
        return ("generate",) if pooling is None else pooling.supported_tasks()

    def execute_model(self, scheduler_output: SchedulerOutput) -> ModelRunnerOutput | None:
        return self.model_runner.execute_model(scheduler_output)

    def sample_tokens(self, grammar_output: GrammarOutput | None) -> ModelRunnerOutput:
        return self.model_runner.sample_tokens(grammar_output)

    def take_draft_token_ids(self) -> DraftTokenIds | None:
        """Speculative decoding: the tokens proposed after the last step, which the engine core schedules next."""
        return self.model_runner.take_draft_token_ids()

    def add_lora(self, lora_request: LoRARequest) -> bool:
        return self.model_runner.add_lora(lora_request)

    def remove_lora(self, lora_id: int) -> bool:
        return self.model_runner.remove_lora(lora_id)

    def pin_lora(self, lora_id: int) -> bool:
        return self.model_runner.pin_lora(lora_id)

    def list_loras(self) -> set[int]:
        return self.model_runner.list_loras()

    def get_supported_kv_cache_layouts(self) -> list[str]:
        # One cache per layer, rows of [block, token-in-block, kv-head, head-dim]; no vLLM attention backend is used.
        return [KVCacheLayout.LBNHC.name]
