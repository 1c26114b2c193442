"""The soak's judgement of its record (tests/reliability/soak.py), on a made-up record: why each failure
happened, memory growth fitted per process and per engine life after its warm-up, and the duration flag."""

import argparse
import random

import pytest
from reliability.load import COMPLETE, ERROR, HUNG, MIX, Outcome, mixed
from reliability.soak import (
    LASTING,
    WARM_UP_S,
    Kill,
    Run,
    Sample,
    failure_cause,
    growth_per_hour,
    memory_growth,
    parse_duration,
    report,
    verdict,
)

KILLS = [Kill(at=100.0, ready_after=30.0)]
MIB = 2**20


def outcome(started: float, ended: float, result: str = ERROR, kind: str = "stream") -> Outcome:
    return Outcome(0, kind, started, ended, result, "" if result == COMPLETE else "why")


def test_failures_are_told_apart_by_when_they_happened() -> None:
    assert failure_cause(outcome(95, 101), KILLS) == "cut"  # in flight at the kill
    assert failure_cause(outcome(110, 110.1), KILLS) == "refused"  # sent while the engine was down
    assert failure_cause(outcome(200, 201), KILLS) == "otherwise"  # nothing to excuse it


def sample(at: float, operator_mib: float, engine_mib: float, engine_pid: int) -> Sample:
    rss = dict.fromkeys(LASTING, 40 * MIB) | {"operator": int(operator_mib * MIB)}
    return Sample(at, True, rss | {"engine": int(engine_mib * MIB), "engine core": 1000 * MIB}, engine_pid)


def test_memory_growth_is_fitted_per_process_and_per_engine_life_after_its_warm_up() -> None:
    # The operator grows 2 MiB/h, with noise a last-minus-first reading would take for growth; engine 1 grows
    # 0.1 MiB/s through its life, engine 2 not at all.
    rng = random.Random(0)
    samples = [
        sample(t, 50 + 2 * t / 3600 + rng.uniform(-0.3, 0.3), 200 + (t * 0.1 if t < 1800 else 0), 1 if t < 1800 else 2)
        for t in range(0, 3600, 5)
    ]
    growths = {growth.process: growth for growth in memory_growth(samples, started=0)}
    assert set(growths) == {*LASTING, "engine 1", "engine 2"}
    assert growths["operator"].per_hour_mib == pytest.approx(2, abs=0.1)
    assert growths["operator"].minutes == pytest.approx((3595 - WARM_UP_S) / 60)
    assert growths["vms serve"].per_hour_mib == pytest.approx(0, abs=1e-6)
    engine_1 = growths["engine 1"]
    # judged from its own warm-up on
    assert engine_1.last_mib - engine_1.first_mib == pytest.approx((1795 - WARM_UP_S) * 0.1, abs=0.1)
    assert growths["engine 2"].per_hour_mib == pytest.approx(0, abs=1e-6)
    assert "OVER the 1 MiB/h bound" in verdict(list(growths.values()))


def test_an_operator_that_does_not_grow_is_under_the_bound() -> None:
    samples = [sample(t, 55, 200, 1) for t in range(0, 7200, 5)]
    assert "0.00 MiB/h over 2.0 h, under the 1 MiB/h bound" in verdict(memory_growth(samples, started=0))


def test_growth_per_hour_is_a_line_fitted_through_every_sample() -> None:
    assert growth_per_hour([0, 1800, 3600], [0, 5 * MIB, 0]) == pytest.approx(0)  # a bump is not a trend
    assert growth_per_hour([0, 1800, 3600], [0, MIB, 2 * MIB]) == pytest.approx(2)


def test_the_report_counts_every_outcome_once() -> None:
    run = Run(0.0, kills=KILLS, left_in_engine=0)
    run.outcomes = [
        outcome(1, 3, COMPLETE),
        outcome(4, 5, COMPLETE, kind="left"),
        outcome(95, 101),
        outcome(110, 110.1),
        outcome(200, 201),
        outcome(300, 400, HUNG),
    ]
    text = report(run, minutes=10, clients=1)
    # total, whole, cut, refused, otherwise (error + hung), hung, left in the engine
    assert "| 6 | 2 | 1 | 1 | 2 | 1 | 0 |" in text
    assert "| left | 1 |" in text  # the latency of a left stream is its own row
    assert "| 0-5 | 1 |" in text  # per window over time, the left stream aside


@pytest.mark.parametrize(("text", "seconds"), [("2h", 7200), ("90m", 5400), ("45s", 45), ("30", 1800), ("1.5h", 5400)])
def test_the_duration_reads_seconds_minutes_and_hours(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2d", "-1h", "0", "h", "two hours"])
def test_a_bad_duration_names_what_is_allowed(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="give a positive number with s, m or h"):
        parse_duration(text)


def test_the_mix_sends_every_kind_in_its_share() -> None:
    make, rng = mixed("m"), random.Random(0)
    kinds = [make(rng).kind for _ in range(4000)]
    shares = {kind: kinds.count(kind) / len(kinds) for kind in set(kinds)}
    kinds_in_order = ["stream", "completion", "chat", "chat-stream", "structured", "left"]
    expected = dict(zip(kinds_in_order, (share for share, _ in MIX), strict=True))
    assert shares == pytest.approx(expected, abs=0.03)
