"""Speculative decoding with prompt lookup against none: `python -m vms_bench.speculative`.

Single-stream greedy decode of the default model on a repetitive workload (prompts cut from a text that repeats
itself, as code, lists and templated answers do), with `--speculative-config '{"method": "ngram", ...}'` and
without, for vms and for vLLM's CPU path (all cores, the equal-core peer), each run a fresh engine process of
`vms_bench.run_backend`, interleaved over repeats. The report gives each engine's decode rate, the ratio that
speculation buys it, and the share of proposed tokens accepted.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from vms_bench.cli import _run
from vms_bench.workload import Workload

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_min": 2, "prompt_lookup_max": 5}
ENGINES = ("vms-default", "vllm-cpu-default-all-cores")  # bfloat16, what each engine picks by default
REPETITIVE_TEXT = (
    "def area_of_square(side):\n    return side * side\n\n\n"
    "def area_of_rectangle(width, height):\n    return width * height\n\n\n"
    "def area_of_triangle(base, height):\n    return base * height / 2\n\n\n"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output-tokens", type=int, default=128)
    parser.add_argument("--output", type=Path, default=Path("bench/results/speculative.json"))
    parser.add_argument("--model", type=Path, default=None, help="HF model directory (default: the embedded model)")
    parser.add_argument("--smoke", action="store_true", help="8 tokens, one repeat, vLLM eager: proves it works")
    parser.add_argument("--engines", nargs="+", choices=ENGINES, default=list(ENGINES), help="default: both")
    args = parser.parse_args(argv)
    from vms_supervisor.default_model import prepare_default_model

    model_dir = args.model or prepare_default_model()
    workload = Workload(output_tokens=args.output_tokens, concurrency=(1, 3), repeats=args.repeats)
    if args.smoke:
        workload = Workload(output_tokens=8, concurrency=(1, 3), repeats=1, vllm_cpu_eager=True)
    workload = workload.with_prompts(model_dir, REPETITIVE_TEXT)
    variants = [(engine, speculative) for engine in args.engines for speculative in (None, NGRAM)]
    logs = args.output.parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict]] = {_name(*variant): [] for variant in variants}
    with tqdm(total=workload.repeats * len(variants), desc="speculative bench runs", unit="run") as progress:
        for repeat in range(workload.repeats):
            for engine, speculative in variants:
                name = _name(engine, speculative)
                progress.set_postfix_str(f"{name} #{repeat + 1}")
                runs[name].append(_run(engine, model_dir, workload, logs / f"{name}-{repeat + 1}.log", speculative))
                progress.update()
    result = {"model": model_dir.name, "speculative_config": NGRAM, "runs": runs, "summary": summarise(runs)}
    args.output.write_text(json.dumps(result, indent=2))
    print(markdown(result["summary"]))
    print(f"json: {args.output}", file=sys.stderr)
    return 0


def _name(engine: str, speculative: dict | None) -> str:
    return f"{engine}+ngram" if speculative else engine


def summarise(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Per variant: median single-stream decode, the acceptance rate, and for +ngram the speedup over none."""
    summary = {}
    for name, variant_runs in runs.items():
        decode = statistics.median(run["decode_tokens_per_s"] for run in variant_runs)
        entry = {"decode_tokens_per_s": decode, "repeats": len(variant_runs)}
        counters = [run["speculation"] for run in variant_runs if run.get("speculation")]
        if counters:
            proposed = sum(c["vllm:spec_decode_num_draft_tokens"] for c in counters)
            entry["accepted_share"] = sum(c["vllm:spec_decode_num_accepted_tokens"] for c in counters) / proposed
        summary[name] = entry
    for name, entry in summary.items():
        if name.endswith("+ngram"):
            entry["speedup"] = (
                entry["decode_tokens_per_s"] / summary[name.removesuffix("+ngram")]["decode_tokens_per_s"]
            )
    return summary


def markdown(summary: dict[str, dict]) -> str:
    rows = ["| engine | single-stream decode (tokens/s, median) | ngram / none | proposed tokens accepted |"]
    rows.append("| --- | --- | --- | --- |")
    for name, entry in summary.items():
        speedup = f"{entry['speedup']:.2f}x" if "speedup" in entry else ""
        accepted = f"{entry['accepted_share']:.0%}" if "accepted_share" in entry else ""
        rows.append(f"| {name} | {entry['decode_tokens_per_s']:.1f} | {speedup} | {accepted} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
