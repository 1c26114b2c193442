"""Summaries (min and median over repeats), ratios against the peers, and the report files: JSON, Markdown, PNG."""

import json
import statistics
from pathlib import Path

# figure name -> (label, unit, True when higher is better)
FIGURES = {
    "startup_s": ("engine start-up to first token", "s", False),
    "ttft_s": ("time to first token", "s", False),
    "decode_tokens_per_s": ("single-stream decode", "tokens/s", True),
    "peak_rss_mb": ("peak resident memory", "MiB", False),
}


def flatten(run: dict) -> dict[str, float]:
    """One run's figures as name -> value, throughput levels as throughput@N."""
    figures = {name: run[name] for name in FIGURES if name in run}
    figures.update({f"throughput@{level}": value for level, value in run["throughput"].items()})
    return figures


def describe(name: str) -> tuple[str, str, bool]:
    if name.startswith("throughput@"):
        return f"throughput, {name.split('@')[1]} concurrent", "tokens/s", True
    return FIGURES[name]


def summarise(runs: list[dict]) -> dict[str, dict]:
    flat = [flatten(run) for run in runs]
    return {
        name: {"min": min(r[name] for r in flat), "median": statistics.median(r[name] for r in flat)}
        for name in flat[0]
    }


def ratios(summaries: dict[str, dict], subject: str, peers: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """subject median / peer median for every figure both have (above 1 is better where higher is better)."""
    ours = summaries.get(subject)
    if not ours:
        return {}
    return {
        peer: {name: ours[name]["median"] / theirs[name]["median"] for name in ours if name in theirs}
        for peer in peers
        if (theirs := summaries.get(peer))
    }


def comparisons(summaries: dict[str, dict], tables: dict[str, tuple[str, tuple[str, ...]]]) -> dict[str, dict]:
    """Per report table: its subject, the backends it shows and the subject's ratios to each peer that ran."""
    result = {}
    for title, (subject, peers) in tables.items():
        shown = [backend for backend in (subject, *peers) if summaries.get(backend)]
        if shown:
            result[title] = {"subject": subject, "backends": shown, "ratios": ratios(summaries, subject, peers)}
    return result


def bound_gaps(summaries: dict[str, dict], bounds: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each backend's median as a fraction of its roofline ceiling (decode: bandwidth; batches: compute)."""
    gaps = {}
    for backend, figures in summaries.items():
        if not figures:
            continue
        ceiling = bounds[backend]
        gaps[backend] = {
            "decode_tokens_per_s": figures["decode_tokens_per_s"]["median"] / ceiling["decode_tokens_per_s"]
        }
        for name in figures:
            if name.startswith("throughput@") and name != "throughput@1":
                gaps[backend][name] = figures[name]["median"] / ceiling["throughput_tokens_per_s"]
    return gaps


def comparison_table(summaries: dict[str, dict], comparison: dict) -> list[str]:
    subject, shown, peers = comparison["subject"], comparison["backends"], comparison["ratios"]
    header = ["figure", *[f"{b} median (min)" for b in shown], *[f"{subject} / {p}" for p in peers]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in summaries[shown[0]]:
        label, unit, higher_better = describe(name)
        cells = [f"{label} ({unit}, {'higher' if higher_better else 'lower'} is better)"]
        for backend in shown:
            figure = summaries[backend].get(name)
            cells.append(f"{_number(figure['median'])} ({_number(figure['min'])})" if figure else "-")
        cells += [f"{peers[peer][name]:.2f}" if name in peers[peer] else "-" for peer in peers]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    summaries = result["summaries"]
    present = [backend for backend, figures in summaries.items() if figures]
    lines = []
    for title, comparison in result["comparisons"].items():
        lines += [f"### {title[0].upper()}{title[1:]}", "", *comparison_table(summaries, comparison), ""]
    machine = result["machine"]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores; memory bandwidth "
        f"{machine['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
        f"float32 matmul {machine['matmul_flops'] / 1e9:.1f} GFLOP/s.",
        "",
        "| backend | weight bytes | decode ceiling (tokens/s) | decode / ceiling | batch ceiling (tokens/s) | "
        "best batch / ceiling |",
        "|---|---|---|---|---|---|",
    ]
    for backend in present:
        bound, gap = result["bounds"][backend], result["bound_gaps"][backend]
        batch_gaps = [value for name, value in gap.items() if name.startswith("throughput@")]
        lines.append(
            f"| {backend} | {bound['weight_bytes'] / 1e6:.0f} MB | {bound['decode_tokens_per_s']:.0f} | "
            f"{gap['decode_tokens_per_s']:.0%} | {bound['throughput_tokens_per_s']:.0f} | "
            f"{max(batch_gaps, default=0):.0%} |"
        )
    for backend, reason in result["skipped"].items():
        lines.append(f"\n**{backend} not run:** {reason}")
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    """Three significant digits, without switching to exponent notation for thousands."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for backend, figures in result["summaries"].items():
        levels = sorted(int(name.split("@")[1]) for name in figures if name.startswith("throughput@"))
        if levels:
            values = [figures[f"throughput@{level}"]["median"] for level in levels]
            axes.plot(levels, values, marker="o", label=backend)
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel("output tokens/s (median)")
    axes.set_title(f"Throughput vs concurrency: {result['model']}")
    axes.grid(True, alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_reports(result: dict, directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / "results.json",
        "markdown": directory / "results.md",
        "plot": directory / "throughput.png",
    }
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["markdown"].write_text(markdown(result))
    plot(result, paths["plot"])
    return paths
