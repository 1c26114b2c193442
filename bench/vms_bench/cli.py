"""`vms bench` / `python -m vms_bench`: run every backend on one workload, side by side, and write the report.

Repeats are interleaved (every backend once, then again, ...) so that a slow spell of the machine hits every
backend alike. Each run is a fresh process: start-up and memory belong to that engine alone.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tqdm import tqdm

from vms_bench.backends import (
    BACKEND_ADDITIONAL_CONFIG,
    BACKEND_DTYPE,
    BACKEND_ENV,
    BACKEND_QUANTIZATION,
    BACKENDS,
    BYTES_PER_WEIGHT,
    COMPARISONS,
    llama_cpp_installed,
)
from vms_bench.memory import PeakRss
from vms_bench.report import bound_gaps, comparisons, summarise, write_reports
from vms_bench.roofline import ceilings, measure_machine
from vms_bench.weights import active_parameters, gguf_weight_bytes
from vms_bench.workload import SMOKE, Workload

RUN_TIMEOUT_S = 3600


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.random_moe and (args.model or args.gguf):
        parser.error("--random-moe makes its own model: give it without --model and --gguf")
    from vms_supervisor.default_model import embedded_gguf_path, prepare_default_model

    if args.random_moe:
        from vms_bench.random_moe import prepare_random_moe

        model_dir, gguf_path = prepare_random_moe(), None
    else:
        model_dir, gguf_path = args.model or prepare_default_model(), args.gguf or embedded_gguf_path()
    workload = SMOKE if args.smoke else Workload(repeats=args.repeats)
    workload = workload.with_prompts(model_dir)
    backends, skipped = _available(args.backends, gguf_path is not None)

    print("measuring the machine's memory bandwidth and matmul FLOP/s ...", file=sys.stderr)
    machine = {"cpu": _cpu_name(), "cores": os.cpu_count(), **measure_machine(args.smoke)}
    parameters = active_parameters(model_dir)  # what a decoded token multiplies by: a MoE's chosen experts only
    weight_bytes = {backend: BYTES_PER_WEIGHT[dtype] * parameters for backend, dtype in BACKEND_DTYPE.items()}
    if gguf_path is not None:
        weight_bytes["llama-cpp"] = gguf_weight_bytes(gguf_path)
    weight_bytes["vms-int8"] = parameters  # one byte each, the output projection included (norms: 0.03%)

    runs: dict[str, list[dict]] = {backend: [] for backend in backends}
    logs = args.output_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with tqdm(total=workload.repeats * len(backends), desc="bench runs", unit="run") as progress:
        for repeat in range(workload.repeats):
            for backend in backends:
                progress.set_postfix_str(f"{backend} #{repeat + 1}")
                model = gguf_path if backend == "llama-cpp" else model_dir
                runs[backend].append(_run(backend, model, workload, logs / f"{backend}-{repeat + 1}.log"))
                progress.update()

    summaries = {backend: summarise(backend_runs) for backend, backend_runs in runs.items()}
    bounds = {backend: ceilings(machine, weight_bytes[backend], parameters) for backend in backends}
    result = {
        "model": model_dir.name,
        "workload": {key: value for key, value in workload.to_json().items() if key != "prompts"},
        "machine": machine,
        "runs": runs,
        "summaries": summaries,
        "comparisons": comparisons(summaries, COMPARISONS),
        "bounds": bounds,
        "bound_gaps": bound_gaps(summaries, bounds),
        "skipped": skipped,
    }
    paths = write_reports(result, args.output_dir)
    print(paths["markdown"].read_text())
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()), file=sys.stderr)
    return 0


def _available(requested: list[str], has_gguf: bool) -> tuple[list[str], dict[str, str]]:
    skipped = {}
    if "llama-cpp" in requested and not has_gguf:
        skipped["llama-cpp"] = "no GGUF of this checkpoint (the random MoE has none)"
    elif "llama-cpp" in requested and not llama_cpp_installed():
        skipped["llama-cpp"] = "llama-cpp-python is not installed (`make bench` installs it)"
    if "llama-cpp" in skipped:
        print(f"vms bench: SKIPPING llama-cpp: {skipped['llama-cpp']}", file=sys.stderr)
    return [backend for backend in requested if backend not in skipped], skipped


def _run(backend: str, model: Path, workload: Workload, log: Path, speculative: dict | None = None) -> dict:
    """One engine process: its figures plus the peak memory of its whole process tree."""
    env = {**os.environ, **BACKEND_ENV[backend]}
    with tempfile.TemporaryDirectory() as scratch:
        workload_file, output = Path(scratch) / "workload.json", Path(scratch) / "figures.json"
        workload_file.write_text(json.dumps(workload.to_json()))
        command = [sys.executable, "-m", "vms_bench.run_backend", "--backend"]
        command += ["llama-cpp" if backend == "llama-cpp" else "vllm", "--model", str(model)]
        command += ["--dtype", BACKEND_DTYPE.get(backend, "auto")]
        if backend in BACKEND_QUANTIZATION:
            command += ["--quantization", BACKEND_QUANTIZATION[backend]]
        if backend in BACKEND_ADDITIONAL_CONFIG:
            command += ["--additional-config", json.dumps(BACKEND_ADDITIONAL_CONFIG[backend])]
        if speculative is not None:
            command += ["--speculative-config", json.dumps(speculative)]
        command += ["--workload", str(workload_file), "--output", str(output), "--started-at", str(time.time())]
        with log.open("w") as handle:
            process = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT)
            with PeakRss(process.pid) as memory:
                returncode = process.wait(timeout=RUN_TIMEOUT_S)
        if returncode != 0:
            raise RuntimeError(f"{backend} run failed (exit {returncode}); log {log}:\n{log.read_text()[-3000:]}")
        figures = json.loads(output.read_text())
    return {**figures, "peak_rss_mb": memory.peak_bytes / (1 << 20)}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vms bench", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat: proves the harness works")
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend (default 3; min and median reported)")
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), help="which engines to run (default: all)"
    )
    parser.add_argument("--model", type=Path, default=None, help="HF model directory (default: the embedded model)")
    parser.add_argument("--gguf", type=Path, default=None, help="GGUF for llama-cpp (default: the embedded one)")
    parser.add_argument(
        "--random-moe",
        action="store_true",
        help="a random ~260M Qwen3-MoE made on first use instead of the model (no llama-cpp: it has no GGUF)",
    )
    parser.add_argument("--output-dir", type=Path, default=Path("bench/results"), help="where the report goes")
    return parser


if __name__ == "__main__":
    sys.exit(main())
