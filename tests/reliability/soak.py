"""`make soak`: one real `vms serve` under mixed load for a long time (30 minutes by default) while its engine is
SIGKILLed at random moments; writes the report into docs/reliability.md (between its soak markers) and the plot
docs/reliability.png. Not a test: it judges nothing by itself, it measures what the long run did.

Measured: requests served and failed (inside and outside the recovery after a kill), hung requests, latency
p50/p99 per request kind, recovery times, and the resident memory of the operator (alive the whole run) and of
each engine over its life, so that a leak shows as growth.
"""

import argparse
import json
import os
import random
import re
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
from integration.served import Served, start, stop

from reliability.load import COMPLETE, HUNG, PAUSE_AFTER_ERROR_S, Load, Outcome, mixed
from vms_bench.memory import tree_rss

ROOT = Path(__file__).parents[2]
SERVED_NAME = "smollm2"
REQUEST_BOUND_S = 120
SAMPLE_EVERY_S = 5.0
WARM_UP_S = 60  # an engine's memory is judged from this long after it became ready
OPERATOR, ENGINE = "vms_supervisor.operator", "vllm.entrypoints.openai.api_server"


@dataclass
class Sample:
    at: float
    ready: bool
    operator_rss: int
    engine_rss: int  # the engine's whole process tree (API server and engine core)
    engine_pid: int | None


@dataclass
class Kill:
    at: float
    ready_after: float | None = None


@dataclass
class Run:
    started: float
    samples: list[Sample] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)


def rss_of(served: Served, marker: str) -> tuple[int, int | None]:
    """Resident bytes of the run's process whose command line has `marker`, with its children; and its pid."""
    for process in served.process_tree():
        try:
            if marker in " ".join(process.cmdline()):
                return tree_rss(process), process.pid
        except psutil.Error:
            continue
    return 0, None


def sample_until(served: Served, run: Run, done: threading.Event) -> None:
    while not done.wait(SAMPLE_EVERY_S):
        ready = served.sample()[0] == 200
        operator_rss, _ = rss_of(served, OPERATOR)
        engine_rss, engine_pid = rss_of(served, ENGINE)
        run.samples.append(Sample(time.monotonic(), ready, operator_rss, engine_rss, engine_pid))


def kill_engine(served: Served) -> Kill:
    """SIGKILL the engine's main process, then wait until readiness is back."""
    kill = Kill(time.monotonic())
    os.kill(served.status()["engine_pid"], signal.SIGKILL)
    while served.sample()[0] == 200 and time.monotonic() - kill.at < 30:  # the operator notices within seconds
        time.sleep(0.2)
    served.wait_ready(poll=0.2)
    kill.ready_after = time.monotonic() - kill.at
    return kill


def soak(minutes: float, clients: int, kill_every_s: tuple[float, float], seed: int, directory: Path) -> Run:
    served = start(directory, {"VMS_MAX_MODEL_LEN": "1024"}, "--served-model-name", SERVED_NAME)
    try:
        print(f"soak: engine ready after {served.wait_ready():.0f} s; {minutes:g} min of load from {clients} clients")
        run, rng, done = Run(time.monotonic()), random.Random(seed), threading.Event()
        sampler = threading.Thread(target=sample_until, args=(served, run, done), daemon=True)
        sampler.start()
        load = Load(served.base_url, mixed(SERVED_NAME), clients, REQUEST_BOUND_S, seed)
        load.start()
        end, next_report = run.started + minutes * 60, run.started + 60
        next_kill = run.started + rng.uniform(*kill_every_s)
        while (now := time.monotonic()) < end:
            if now >= next_kill:
                run.kills.append(kill_engine(served))
                after = run.kills[-1].ready_after
                print(f"soak: engine killed at {now - run.started:.0f} s, ready again after {after:.1f} s")
                next_kill = time.monotonic() + rng.uniform(*kill_every_s)
            if now >= next_report:
                whole = sum(outcome.result == COMPLETE for outcome in load.outcomes)
                print(f"soak: {(now - run.started) / 60:.0f}/{minutes:g} min, {whole} requests served", flush=True)
                next_report += 60
            time.sleep(1)
        run.outcomes = load.finish()
        done.set()
        sampler.join()
        return run
    finally:
        stop(served)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def failure_cause(outcome: Outcome, kills: list[Kill]) -> str:
    """Why a request failed: cut in flight by a kill, refused while the engine was down, or neither."""
    for kill in kills:
        if outcome.started < kill.at <= outcome.ended:
            return "cut"
        if kill.at <= outcome.started <= kill.at + kill.ready_after:
            return "refused"
    return "otherwise"


def memory_growth(samples: list[Sample], started: float) -> tuple[list[str], float, float]:
    """Rows of the memory table (MB), the operator's growth and the largest engine growth, both in MB: the
    operator from the end of the warm-up to the end, each engine from WARM_UP_S into its life to its last sample."""
    mb = 1 / 2**20
    operator = [s for s in samples if s.at >= started + WARM_UP_S and s.operator_rss]
    operator_growth = (operator[-1].operator_rss - operator[0].operator_rss) * mb if operator else float("nan")
    rows = (
        [
            f"| operator (whole run) | {operator[0].operator_rss * mb:.0f} | {operator[-1].operator_rss * mb:.0f} | "
            f"{operator_growth:+.1f} |"
        ]
        if operator
        else []
    )
    engine_growth = 0.0
    for number, pid in enumerate(dict.fromkeys(s.engine_pid for s in samples if s.engine_pid), start=1):
        life = [s for s in samples if s.engine_pid == pid and s.engine_rss]
        judged = [s for s in life if s.at >= life[0].at + WARM_UP_S]
        if len(judged) < 2:
            continue
        growth = (judged[-1].engine_rss - judged[0].engine_rss) * mb
        engine_growth = max(engine_growth, growth)
        rows.append(
            f"| engine {number} ({(judged[-1].at - life[0].at) / 60:.0f} min) | {judged[0].engine_rss * mb:.0f} | "
            f"{judged[-1].engine_rss * mb:.0f} | {growth:+.1f} |"
        )
    return rows, operator_growth, engine_growth


def report(run: Run, minutes: float, clients: int) -> str:
    outcomes, kills = run.outcomes, run.kills
    complete = [o for o in outcomes if o.result == COMPLETE]
    causes = Counter(failure_cause(o, kills) for o in outcomes if o.result != COMPLETE)
    outside = [o for o in outcomes if o.result != COMPLETE and failure_cause(o, kills) == "otherwise"]
    hung = [o for o in outcomes if o.result == HUNG]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {minutes:g} min, {clients} clients (mixed: 70% "
        f"streamed completions, 30% chat; 8-128 tokens), {len(kills)} engine SIGKILLs at random moments, "
        f"{psutil.cpu_count()} CPU cores, the default model. A refused client retries after "
        f"{PAUSE_AFTER_ERROR_S:g} s, so an outage shows as many refused requests.",
        "",
        "| requests | served whole | cut in flight by a kill | refused while the engine was down | failed otherwise "
        "| hung |",
        "|---|---|---|---|---|---|",
        f"| {len(outcomes)} | {len(complete)} | {causes['cut']} | {causes['refused']} | {causes['otherwise']} "
        f"| {len(hung)} |",
        "",
        "| latency of whole answers (s) | requests | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for kind in ("stream", "chat"):
        seconds = [o.seconds for o in complete if o.kind == kind]
        lines.append(
            f"| {kind} | {len(seconds)} | {percentile(seconds, 0.5):.2f} | {percentile(seconds, 0.99):.2f} | "
            f"{max(seconds, default=float('nan')):.2f} |"
        )
    recovery = [kill.ready_after for kill in kills]
    lines += [
        "",
        f"Recovery after each kill (ready again, s): {', '.join(f'{r:.1f}' for r in recovery) or 'no kill'}"
        + (f"; median {statistics.median(recovery):.1f}." if recovery else "."),
    ]
    rows, operator_growth, engine_growth = memory_growth(run.samples, run.started)
    lines += [
        "",
        f"| resident memory (MB), from {WARM_UP_S} s in | first | last | growth |",
        "|---|---|---|---|",
        *rows,
        "",
        f"Largest growth: operator {operator_growth:+.1f} MB, an engine {engine_growth:+.1f} MB.",
    ]
    if outside:
        lines += ["", "Failures outside a recovery (first 5), seconds into the run:"]
        lines += [
            f"- {o.started - run.started:.1f}-{o.ended - run.started:.1f} s, {o.kind}: {o.detail}" for o in outside[:5]
        ]
    return "\n".join(lines)


def plot(run: Run, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minute = lambda at: (at - run.started) / 60  # noqa: E731
    span = int(max((minute(o.ended) for o in run.outcomes), default=0)) + 1
    served, cut = [0] * span, [0] * span
    p50, p99 = [], []
    for index in range(span):
        bucket = [o for o in run.outcomes if index <= minute(o.ended) < index + 1]
        served[index] = sum(o.result == COMPLETE for o in bucket)
        cut[index] = sum(o.result != COMPLETE and failure_cause(o, run.kills) != "refused" for o in bucket)
        seconds = [o.seconds for o in bucket if o.result == COMPLETE and o.kind == "stream"]
        p50.append(percentile(seconds, 0.5))
        p99.append(percentile(seconds, 0.99))
    figure, (requests, latency, memory) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    requests.bar(range(span), served, width=0.8, label="served whole", align="edge")
    requests.bar(range(span), cut, width=0.8, bottom=served, label="cut or failed", color="tab:red", align="edge")
    requests.set_ylabel("requests / min")
    latency.plot([i + 0.5 for i in range(span)], p50, label="p50")
    latency.plot([i + 0.5 for i in range(span)], p99, label="p99")
    latency.set_ylabel("streamed request (s)")
    at = [minute(s.at) for s in run.samples]
    memory.plot(at, [s.operator_rss / 2**20 for s in run.samples], label="operator")
    memory.plot(at, [s.engine_rss / 2**20 for s in run.samples], label="engine (with engine core)")
    memory.set_ylabel("resident MB")
    memory.set_xlabel("minutes")
    for axis in (requests, latency, memory):
        for kill in run.kills:
            axis.axvspan(minute(kill.at), minute(kill.at + kill.ready_after), color="grey", alpha=0.3, linewidth=0)
        axis.legend(loc="upper right", fontsize="small")
    requests.set_title("vms soak: mixed load; grey: from an engine SIGKILL until ready again")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_report(text: str, document: Path) -> None:
    """Replace the soak section of `document` (between its markers) with `text`."""
    pattern = r"(<!-- soak:start -->\n).*?(\n<!-- soak:end -->)"
    content = document.read_text()
    assert re.search(pattern, content, re.S), f"{document} lost its soak markers"
    document.write_text(re.sub(pattern, lambda m: m.group(1) + text + m.group(2), content, flags=re.S))


def main() -> None:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(180, 420), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--document", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="vms-soak-"))  # kept: the logs and the record, to look into
    run = soak(args.minutes, args.clients, tuple(args.kill_every), args.seed, directory)
    (directory / "record.json").write_text(json.dumps(asdict(run)))
    print(f"soak: vms serve's log, the engine logs and every request's record are in {directory}")
    text = report(run, args.minutes, args.clients)
    plot(run, args.document.with_suffix(".png"))
    write_report(text + f"\n\n![soak]({args.document.with_suffix('.png').name})", args.document)
    print(text)


if __name__ == "__main__":
    main()
