"""The benchmark report's arithmetic: min and median over repeats, ratios, distance from the roofline."""

from vms_bench.report import bound_gaps, comparisons, markdown, ratios, summarise


def run(decode: float, startup: float, batch: float) -> dict:
    return {
        "startup_s": startup,
        "ttft_s": 0.1,
        "decode_tokens_per_s": decode,
        "peak_rss_mb": 100.0,
        "throughput": {"1": decode, "32": batch},
    }


def test_min_and_median_over_repeats() -> None:
    summary = summarise([run(10, 5, 100), run(30, 7, 300), run(20, 6, 200)])
    assert summary["decode_tokens_per_s"] == {"min": 10, "median": 20}
    assert summary["throughput@32"] == {"min": 100, "median": 200}


def test_ratios_are_the_subject_over_each_peer_on_medians() -> None:
    summaries = {"vms": summarise([run(20, 6, 400)]), "vllm-cpu": summarise([run(10, 3, 100)])}
    assert ratios(summaries, "vms", ("vllm-cpu",))["vllm-cpu"]["decode_tokens_per_s"] == 2.0
    assert ratios(summaries, "vms", ("vllm-cpu",))["vllm-cpu"]["startup_s"] == 2.0
    assert ratios(summaries, "vms", ("vllm-cpu",))["vllm-cpu"]["throughput@32"] == 4.0


def test_each_table_compares_its_own_subject_with_its_own_peers_only() -> None:
    summaries = {
        "vms-default": summarise([run(40, 6, 800)]),
        "vllm-cpu-default": summarise([run(20, 3, 400)]),
        "vms": summarise([run(20, 6, 400)]),
        "vllm-cpu": summarise([run(10, 3, 100)]),
        "llama-cpp": {},  # not run
    }
    tables = {"defaults": ("vms-default", ("vllm-cpu-default", "llama-cpp")), "float32": ("vms", ("vllm-cpu",))}
    result = comparisons(summaries, tables)
    assert result["defaults"]["backends"] == ["vms-default", "vllm-cpu-default"]
    assert set(result["defaults"]["ratios"]) == {"vllm-cpu-default"}
    assert result["defaults"]["ratios"]["vllm-cpu-default"]["throughput@32"] == 2.0
    assert result["float32"]["ratios"]["vllm-cpu"]["throughput@32"] == 4.0


def test_gaps_compare_decode_to_bandwidth_and_batches_to_compute() -> None:
    summaries = {"vms": summarise([run(20, 6, 400)])}
    gaps = bound_gaps(summaries, {"vms": {"decode_tokens_per_s": 40.0, "throughput_tokens_per_s": 800.0}})
    assert gaps["vms"] == {"decode_tokens_per_s": 0.5, "throughput@32": 0.5}


def test_markdown_names_skipped_peers() -> None:
    summaries = {"vms": summarise([run(20, 6, 400)]), "vllm-cpu": summarise([run(10, 3, 100)])}
    bounds = {
        name: {"weight_bytes": 1e6, "decode_tokens_per_s": 40.0, "throughput_tokens_per_s": 800.0} for name in summaries
    }
    result = {
        "summaries": summaries,
        "comparisons": comparisons(summaries, {"equal precision": ("vms", ("vllm-cpu",))}),
        "bounds": bounds,
        "bound_gaps": bound_gaps(summaries, bounds),
        "skipped": {"llama-cpp": "not installed"},
        "machine": {"cpu": "test", "cores": 2, "bandwidth_bytes_per_s": 1e9, "matmul_flops": 1e9},
    }
    table = markdown(result)
    assert "### Equal precision" in table
    assert "| single-stream decode (tokens/s, higher is better) | 20 (20) | 10 (10) | 2.00 |" in table
    assert "**llama-cpp not run:** not installed" in table


def test_a_mixture_of_experts_roofline_counts_the_chosen_experts_only(tiny_moe_dirs, tiny_model_dirs) -> None:
    """The tiny Qwen3-MoE: 2 of its 3 layers route to 2 of 8 experts; a dense model counts every parameter."""
    import json
    import math

    from vms_bench.weights import active_parameters
    from vms_plugin.models.safetensors_header import read_header

    def sizes(model_dir) -> dict[str, int]:
        entries = {}
        for path in model_dir.glob("*.safetensors"):
            entries.update(read_header(path)[0])
        return {name: math.prod(entry["shape"]) for name, entry in entries.items()}

    model_dir = tiny_moe_dirs["Qwen3MoeForCausalLM"]
    config = json.loads((model_dir / "config.json").read_text())
    every = sizes(model_dir)
    experts = sum(size for name, size in every.items() if ".experts." in name)
    assert experts == 2 * 8 * 3 * config["hidden_size"] * config["moe_intermediate_size"]
    assert active_parameters(model_dir) == sum(every.values()) - experts + experts * 2 // 8
    dense = tiny_model_dirs["LlamaForCausalLM"]
    assert active_parameters(dense) == sum(sizes(dense).values())
