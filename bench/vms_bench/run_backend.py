"""One engine's measurements, run as its own process (`python -m vms_bench.run_backend`) so that start-up and
memory are its own. The parent passes the wall-clock time it spawned us at: start-up includes imports.

Figures (all with the engine warm except start-up):
- startup_s: process spawn to the first generated token;
- ttft_s: one prompt, one token;
- decode_tokens_per_s: one stream, (output_tokens - 1) tokens over the time after its first token;
- throughput: output tokens/s for each concurrency level (all prompts submitted at once).
"""

import argparse
import json
import time
from pathlib import Path

from vms_bench.backends import Backend, LlamaCppBackend, VllmBackend
from vms_bench.workload import Workload


def timed(backend: Backend, prompts: list[list[int]], max_tokens: int) -> tuple[float, int]:
    start = time.perf_counter()
    produced = backend.generate(prompts, max_tokens)
    return time.perf_counter() - start, produced


def measure(backend: Backend, workload: Workload, started_at: float) -> dict:
    prompts = workload.prompts
    backend.generate(prompts[:1], 1)
    startup_s = time.time() - started_at
    ttft_s, _ = timed(backend, prompts[1:2], 1)
    single_s, produced = timed(backend, prompts[2:3], workload.output_tokens)
    throughput = {"1": produced / single_s}
    for concurrency in workload.concurrency:
        if concurrency > 1:
            seconds, produced = timed(backend, prompts[:concurrency], workload.output_tokens)
            throughput[str(concurrency)] = produced / seconds
    return {
        "startup_s": startup_s,
        "ttft_s": ttft_s,
        "decode_tokens_per_s": (workload.output_tokens - 1) / (single_s - ttft_s),
        "throughput": throughput,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("vllm", "llama-cpp"), required=True)
    parser.add_argument("--model", type=Path, required=True, help="HF directory (vllm) or GGUF file (llama-cpp)")
    parser.add_argument("--dtype", default="auto", help="vLLM's --dtype (ignored by llama-cpp)")
    parser.add_argument("--quantization", default=None, help="vLLM's --quantization (ignored by llama-cpp)")
    parser.add_argument(
        "--additional-config", type=json.loads, default=None, help="vLLM's --additional-config, JSON (vllm only)"
    )
    parser.add_argument(
        "--speculative-config", type=json.loads, default=None, help="vLLM's --speculative-config, JSON (vllm only)"
    )
    parser.add_argument("--workload", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--started-at", type=float, required=True)
    args = parser.parse_args()
    workload = Workload.from_json(json.loads(args.workload.read_text()))
    if args.backend == "vllm":
        backend: Backend = VllmBackend(
            args.model, workload, args.dtype, args.quantization, args.additional_config, args.speculative_config
        )
    else:
        backend = LlamaCppBackend(args.model, workload, args.dtype)
    try:
        figures = measure(backend, workload, args.started_at)
        if args.speculative_config is not None:
            figures["speculation"] = backend.acceptance()
        args.output.write_text(json.dumps(figures))
    finally:
        backend.close()


if __name__ == "__main__":
    main()
