"""The engines under test, each behind one call: greedy-generate these prompts, this many tokens each.

`vms`, `vllm-cpu` and `vllm-cpu-all-cores` are the same vLLM `LLM()` with the same arguments; only the
environment differs (BACKEND_ENV, set by the parent), so the platform plugin is the only variable between the
first two. vLLM's CPU backend by default keeps cores for its engine core process (VLLM_CPU_NUM_OF_RESERVED_CPU:
one core on a small host) while vms computes on every core, so `vllm-cpu-all-cores` (no core reserved) is the
peer at equal core count. `llama-cpp` runs the original GGUF through llama-cpp-python.
"""

import os
from pathlib import Path
from typing import Protocol

from vms_bench.workload import Workload

BACKENDS = ("vms", "vllm-cpu", "vllm-cpu-all-cores", "llama-cpp")
BACKEND_ENV: dict[str, dict[str, str]] = {
    "vms": {"VMS_DISABLE": "0"},
    "vllm-cpu": {"VMS_DISABLE": "1"},
    "vllm-cpu-all-cores": {"VMS_DISABLE": "1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    "llama-cpp": {"VMS_DISABLE": "1"},
}


class Backend(Protocol):
    def generate(self, prompts: list[list[int]], max_tokens: int) -> int:
        """Generate `max_tokens` tokens (EOS ignored) for every prompt; return how many tokens came out."""

    def close(self) -> None: ...


class VllmBackend:
    def __init__(self, model_dir: Path, workload: Workload) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=str(model_dir),
            dtype="float32",  # the MindSpore path computes in float32; the peer does the same maths
            max_model_len=workload.max_model_len,
            kv_cache_memory_bytes=workload.kv_cache_bytes,
            enforce_eager=workload.vllm_cpu_eager,
            seed=0,
        )

    def generate(self, prompts: list[list[int]], max_tokens: int) -> int:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, detokenize=False)
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return sum(len(output.outputs[0].token_ids) for output in outputs)

    def close(self) -> None:
        self.llm.llm_engine.engine_core.shutdown()


class LlamaCppBackend:
    """llama-cpp-python's `Llama` holds one sequence, so concurrent requests run one after the other."""

    def __init__(self, gguf_path: Path, workload: Workload) -> None:
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
