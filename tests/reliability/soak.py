"""`make soak`: one real `vms serve` under mixed load for a long time (`DURATION`, 30 minutes by default) while its
engine is SIGKILLed at random moments; writes the report into docs/reliability.md (between its soak markers) and
the plot docs/reliability.png. Not a test: it judges nothing by itself, it measures what the long run did.

Measured: requests served and failed (inside and outside the recovery after a kill), hung requests, requests left
in the engine once the load ended, latency p50/p99 per request kind and over time, recovery times, and the resident
memory of every process of the run over time (`vms serve`, supervisord and the operator alive the whole run, each
engine's API server and engine core over its life), with its growth per hour fitted, so that a leak shows.
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

import httpx
import numpy as np
import psutil
from integration.served import Served, parse_metric, start, stop

from reliability.load import COMPLETE, HUNG, MIX_TEXT, PAUSE_AFTER_ERROR_S, Load, Outcome, mixed

ROOT = Path(__file__).parents[2]
SERVED_NAME = "smollm2"
REQUEST_BOUND_S = 120
SAMPLE_EVERY_S = 5.0
WARM_UP_S = 60  # a process's memory is judged from this long after it started (or the run did)
OPERATOR_GROWTH_LIMIT_MIB_H = 1.0  # what the issue asks of the operator over a long run
ROLES = {  # a marker in the command line: the role of the process
    "supervisord": "supervisord",
    "vms_supervisor.operator": "operator",
    "vllm.entrypoints.openai.api_server": "engine",
}
LASTING = ("vms serve", "supervisord", "operator")  # alive the whole run; the engine's processes live between kills
ENGINE_ROLES = ("engine", "engine core")
UNITS = {"s": 1, "m": 60, "h": 3600}


@dataclass
class Sample:
    at: float
    ready: bool
    rss: dict[str, int]  # resident bytes by role: LASTING and ENGINE_ROLES ("engine core": all the engine's children)
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
    left_in_engine: float = float("nan")  # requests running or waiting in the engine once the load had ended


def parse_duration(text: str) -> float:
    """Seconds in "2h", "90m", "45s" or a bare number of minutes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r}: give a positive number with s, m or h, such as 2h or 90m")
    return float(match.group(1)) * UNITS[match.group(2) or "m"]


def role_of(command: str) -> str:
    return next((role for marker, role in ROLES.items() if marker in command), "")


def memory_by_role(served: Served) -> tuple[dict[str, int], int | None]:
    """Resident bytes of the run's processes by role, and the engine's pid. The engine core is forked from the
    engine and carries its command line, so every descendant of the engine counts as "engine core"."""
    rss = dict.fromkeys(LASTING + ENGINE_ROLES, 0)
    try:
        root = psutil.Process(served.process.pid)
        processes = root.children(recursive=True)
        roles = {process.pid: role_of(" ".join(process.cmdline())) for process in processes}
        engine = next((p for p in processes if roles[p.pid] == "engine" and roles.get(p.ppid()) != "engine"), None)
        for process in engine.children(recursive=True) if engine else []:
            roles[process.pid] = "engine core"
        rss["vms serve"] = root.memory_info().rss
        for process in processes:
            if roles[process.pid]:
                rss[roles[process.pid]] += process.memory_info().rss
    except psutil.Error:  # a process ended while being read (a kill): this sample is short of it, the next is not
        return rss, None
    return rss, engine.pid if engine else None


def sample_until(served: Served, run: Run, done: threading.Event) -> None:
    while not done.wait(SAMPLE_EVERY_S):
        ready = served.sample()[0] == 200
        rss, engine_pid = memory_by_role(served)
        run.samples.append(Sample(time.monotonic(), ready, rss, engine_pid))


def kill_engine(served: Served) -> Kill:
    """SIGKILL the engine's main process, then wait until readiness is back."""
    kill = Kill(time.monotonic())
    os.kill(served.status()["engine_pid"], signal.SIGKILL)
    while served.sample()[0] == 200 and time.monotonic() - kill.at < 30:  # the operator notices within seconds
        time.sleep(0.2)
    served.wait_ready(poll=0.2)
    kill.ready_after = time.monotonic() - kill.at
    return kill


def soak(seconds: float, clients: int, kill_every_s: tuple[float, float], seed: int, directory: Path) -> Run:
    served = start(directory, {"VMS_MAX_MODEL_LEN": "1024"}, "--served-model-name", SERVED_NAME)
    minutes = seconds / 60
    try:
        print(f"soak: engine ready after {served.wait_ready():.0f} s; {minutes:g} min of load from {clients} clients")
        run, rng, done = Run(time.monotonic()), random.Random(seed), threading.Event()
        sampler = threading.Thread(target=sample_until, args=(served, run, done), daemon=True)
        sampler.start()
        load = Load(served.base_url, mixed(SERVED_NAME), clients, REQUEST_BOUND_S, seed)
        load.start()
        end, next_report = run.started + seconds, run.started + 60
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
        run.left_in_engine = requests_left(served.base_url)
        done.set()
        sampler.join()
        return run
    finally:
        stop(served)


def requests_left(base_url: str, patience_s: float = 30) -> float:
    """Requests still running or waiting in the engine once every client has gone, after at most `patience_s`
    for the last ones to be aborted: anything left would be a request the engine lost track of."""
    deadline = time.monotonic() + patience_s
    while True:
        exposition = httpx.get(base_url + "/metrics", timeout=10).text
        left = sum(parse_metric(exposition, f"vllm:num_requests_{which}") for which in ("running", "waiting"))
        if left == 0 or time.monotonic() > deadline:
            return left
        time.sleep(1)


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


def growth_per_hour(at: list[float], rss: list[int]) -> float:
    """MiB per hour of a least-squares line through resident bytes over time: steadier than last minus first."""
    return float(np.polyfit(np.array(at) / 3600, np.array(rss) / 2**20, 1)[0]) if len(at) > 2 else float("nan")


@dataclass(frozen=True)
class Growth:
    process: str
    minutes: float  # judged over
    first_mib: float
    last_mib: float
    per_hour_mib: float

    def row(self) -> str:
        return (
            f"| {self.process} | {self.minutes:.0f} | {self.first_mib:.0f} | {self.last_mib:.0f} | "
            f"{self.last_mib - self.first_mib:+.1f} | {self.per_hour_mib:+.2f} |"
        )


def memory_growth(samples: list[Sample], started: float) -> list[Growth]:
    """Growth of each lasting process from WARM_UP_S into the run, and of each engine (API server and engine core
    together) from WARM_UP_S into its life to its last sample."""
    growths = []
    for role in LASTING:
        judged = [s for s in samples if s.at >= started + WARM_UP_S and s.rss.get(role)]
        if len(judged) > 2:
            growths.append(growth_of(role, [s.at for s in judged], [s.rss[role] for s in judged]))
    for number, pid in enumerate(dict.fromkeys(s.engine_pid for s in samples if s.engine_pid), start=1):
        life = [s for s in samples if s.engine_pid == pid and s.rss["engine core"]]
        judged = [s for s in life if s.at >= life[0].at + WARM_UP_S]
        if len(judged) > 2:
            rss = [sum(s.rss[role] for role in ENGINE_ROLES) for s in judged]
            growths.append(growth_of(f"engine {number}", [s.at for s in judged], rss))
    return growths


def growth_of(process: str, at: list[float], rss: list[int]) -> Growth:
    return Growth(process, (at[-1] - at[0]) / 60, rss[0] / 2**20, rss[-1] / 2**20, growth_per_hour(at, rss))


def verdict(growths: list[Growth]) -> str:
    operator = next((g for g in growths if g.process == "operator"), None)
    if operator is None:
        return "Verdict: no operator memory was sampled past the warm-up."
    lasting = ", ".join(f"{g.process} {g.per_hour_mib:+.2f}" for g in growths if g.process in LASTING)
    engines = [g.last_mib - g.first_mib for g in growths if g.process.startswith("engine")]
    holds = "under" if operator.per_hour_mib < OPERATOR_GROWTH_LIMIT_MIB_H else "OVER"
    return (
        f"Verdict: the operator grew {operator.per_hour_mib:+.2f} MiB/h over {operator.minutes / 60:.1f} h, {holds} "
        f"the {OPERATOR_GROWTH_LIMIT_MIB_H:g} MiB/h bound (fitted MiB/h: {lasting}); each engine life grew at most "
        f"{max(engines, default=float('nan')):+.1f} MiB."
    )


def latency_over_time(run: Run, window_min: float) -> list[str]:
    """Rows of whole answers (the left streams aside) per window of the run: count, p50, p99."""
    complete = [o for o in run.outcomes if o.result == COMPLETE and o.kind != "left"]
    span = max((o.ended for o in run.outcomes), default=run.started) - run.started
    rows = []
    for index in range(int(span // (window_min * 60)) + 1):
        low, high = run.started + index * window_min * 60, run.started + (index + 1) * window_min * 60
        seconds = [o.seconds for o in complete if low <= o.ended < high]
        if seconds:
            rows.append(
                f"| {index * window_min:g}-{(index + 1) * window_min:g} | {len(seconds)} | "
                f"{percentile(seconds, 0.5):.2f} | {percentile(seconds, 0.99):.2f} |"
            )
    return rows


def report(run: Run, minutes: float, clients: int) -> str:
    outcomes, kills = run.outcomes, run.kills
    complete = [o for o in outcomes if o.result == COMPLETE]
    causes = Counter(failure_cause(o, kills) for o in outcomes if o.result != COMPLETE)
    outside = [o for o in outcomes if o.result != COMPLETE and failure_cause(o, kills) == "otherwise"]
    hung = [o for o in outcomes if o.result == HUNG]
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {minutes:g} min, {clients} clients, mixed load "
        f"({MIX_TEXT}; 8-128 tokens), {len(kills)} engine SIGKILLs at random moments, {psutil.cpu_count()} CPU "
        f"cores, the default model. A refused client retries after {PAUSE_AFTER_ERROR_S:g} s, so an outage shows as "
        "many refused requests.",
        "",
        "| requests | served whole | cut in flight by a kill | refused while the engine was down | failed otherwise "
        "| hung | left in the engine after the load |",
        "|---|---|---|---|---|---|---|",
        f"| {len(outcomes)} | {len(complete)} | {causes['cut']} | {causes['refused']} | {causes['otherwise']} "
        f"| {len(hung)} | {run.left_in_engine:g} |",
        "",
        "| latency of whole answers (s) | requests | p50 | p99 | max |",
        "|---|---|---|---|---|",
    ]
    for kind in dict.fromkeys(o.kind for o in complete):
        seconds = [o.seconds for o in complete if o.kind == kind]
        lines.append(
            f"| {kind} | {len(seconds)} | {percentile(seconds, 0.5):.2f} | {percentile(seconds, 0.99):.2f} | "
            f"{max(seconds):.2f} |"
        )
    window = max(5, round(minutes / 8 / 5) * 5)
    lines += [
        "",
        "| minutes into the run | whole answers (all kinds but left) | p50 (s) | p99 (s) |",
        "|---|---|---|---|",
        *latency_over_time(run, window),
    ]
    recovery = [kill.ready_after for kill in kills]
    lines += [
        "",
        f"Recovery after each kill (ready again, s): {', '.join(f'{r:.1f}' for r in recovery) or 'no kill'}"
        + (f"; median {statistics.median(recovery):.1f}." if recovery else "."),
    ]
    growths = memory_growth(run.samples, run.started)
    lines += [
        "",
        f"| resident memory, from {WARM_UP_S} s in | minutes | first MiB | last MiB | growth MiB | MiB/h fitted |",
        "|---|---|---|---|---|---|",
        *(growth.row() for growth in growths),
        "",
        verdict(growths),
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
        seconds = [o.seconds for o in bucket if o.result == COMPLETE and o.kind != "left"]
        p50.append(percentile(seconds, 0.5))
        p99.append(percentile(seconds, 0.99))
    figure, (requests, latency, lasting, engine) = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    requests.bar(range(span), served, width=0.8, label="served whole", align="edge")
    requests.bar(range(span), cut, width=0.8, bottom=served, label="cut or failed", color="tab:red", align="edge")
    requests.set_ylabel("requests / min")
    latency.plot([i + 0.5 for i in range(span)], p50, label="p50")
    latency.plot([i + 0.5 for i in range(span)], p99, label="p99")
    latency.set_ylabel("whole answer (s)")
    at = [minute(s.at) for s in run.samples]
    for axis, roles in ((lasting, LASTING), (engine, ENGINE_ROLES)):
        for role in roles:
            axis.plot(at, [s.rss[role] / 2**20 or float("nan") for s in run.samples], label=role)
        axis.set_ylabel("resident MiB")
    engine.set_xlabel("minutes")
    for axis in (requests, latency, lasting, engine):
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
    parser.add_argument("--duration", type=parse_duration, default="30m", help="such as 2h, 90m or 600s")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--kill-every", type=float, nargs=2, default=(180, 420), metavar=("MIN_S", "MAX_S"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--document", type=Path, default=ROOT / "docs" / "reliability.md")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="vms-soak-"))  # kept: the logs and the record, to look into
    run = soak(args.duration, args.clients, tuple(args.kill_every), args.seed, directory)
    (directory / "record.json").write_text(json.dumps(asdict(run)))
    print(f"soak: vms serve's log, the engine logs and every request's record are in {directory}")
    text = report(run, args.duration / 60, args.clients)
    plot(run, args.document.with_suffix(".png"))
    write_report(text + f"\n\n![soak]({args.document.with_suffix('.png').name})", args.document)
    print(text)


if __name__ == "__main__":
    main()
