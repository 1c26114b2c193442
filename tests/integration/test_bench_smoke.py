"""The benchmark harness works end to end at tiny sizes (a smoke run: its numbers are not judged here).

Real engines in real processes: vms at its default and int8, and vLLM's CPU backend at its default, side by side
(llama.cpp too where installed), then the JSON, Markdown and PNG reports. The backends left out of the smoke run
differ from these only by their dtype or environment (bench/vms_bench/backends.py), each costing a minute of engine
start. Speed itself is judged by `make bench`'s report, never by a test.
"""

import json
import math
from pathlib import Path

import pytest
from conftest import run_vms

pytestmark = pytest.mark.integration

VLLM_BACKENDS = ("vms-default", "vllm-cpu-default", "vms-int8")
FIGURES = ("startup_s", "ttft_s", "decode_tokens_per_s", "peak_rss_mb", "throughput@1", "throughput@4")


@pytest.fixture(scope="module")
def report(default_model_dir: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("bench")
    result = run_vms(
        "bench",
        "--smoke",
        "--model",
        str(default_model_dir),
        "--output-dir",
        str(output),
        "--backends",
        *VLLM_BACKENDS,
        "llama-cpp",
        cache=model_cache,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return output


def test_every_vllm_backend_reports_every_figure(report: Path) -> None:
    result = json.loads((report / "results.json").read_text())
    for backend in VLLM_BACKENDS:
        summary = result["summaries"][backend]
        assert set(FIGURES) <= set(summary), backend
        assert all(summary[name]["median"] > 0 for name in FIGURES), backend
        assert result["bounds"][backend]["decode_tokens_per_s"] > 0
    assert set(result["summaries"]) <= {*VLLM_BACKENDS, "llama-cpp"}
    comparisons = result["comparisons"]
    defaults = comparisons["each system as a user runs it by default"]
    assert defaults["subject"] == "vms-default" and "vllm-cpu-default" in defaults["ratios"]
    assert set(FIGURES) <= set(defaults["ratios"]["vllm-cpu-default"])
    assert comparisons["int8 weights against llama.cpp's 4-bit GGUF"]["subject"] == "vms-int8"
    assert "equal precision (float32 on both)" not in comparisons  # neither of its backends ran
    assert result["bounds"]["vms-int8"]["decode_tokens_per_s"] > result["bounds"]["vms-default"]["decode_tokens_per_s"]
    assert result["machine"]["bandwidth_bytes_per_s"] > 0 and result["machine"]["matmul_flops"] > 0


def test_llama_cpp_is_run_or_its_absence_is_stated(report: Path) -> None:
    result = json.loads((report / "results.json").read_text())
    assert "llama-cpp" in result["summaries"] or "not installed" in result["skipped"]["llama-cpp"]


def test_markdown_table_and_plot_are_written(report: Path) -> None:
    table = (report / "results.md").read_text()
    assert "| single-stream decode (tokens/s, higher is better) |" in table
    assert "| vms-default / vllm-cpu-default |" in table
    assert (report / "throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_speculative_bench_reports_decode_with_and_without_ngram_for_vms_and_vllm(default_model_dir, tmp_path):
    """`python -m vms_bench.speculative --smoke --engines vms-default`: vms with and without prompt lookup, their
    decode rates, the speedup and the accepted share (bench/README.md has real numbers for vLLM's CPU path too;
    the harness starts it through the same code path, and the bench smoke above runs that engine)."""
    import subprocess
    import sys

    output = tmp_path / "speculative.json"
    command = [sys.executable, "-m", "vms_bench.speculative", "--smoke", "--engines", "vms-default"]
    command += ["--model", str(default_model_dir)]
    result = subprocess.run([*command, "--output", str(output)], capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads(output.read_text())["summary"]
    assert set(summary) == {"vms-default", "vms-default+ngram"}
    # At 8 tokens a speculative stream can take less than the 1-token request the harness subtracts as time to first
    # token, so the smoke run's rates are only checked to be there; their sizes mean something at real lengths.
    for name, entry in summary.items():
        assert math.isfinite(entry["decode_tokens_per_s"])
        if name.endswith("+ngram"):
            assert math.isfinite(entry["speedup"]) and 0 <= entry["accepted_share"] <= 1
    assert "| vms-default+ngram |" in result.stdout
