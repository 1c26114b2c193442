"""The soak's judgement of its record (tests/reliability/soak.py), on a made-up record: why each failure
happened, and memory growth measured per engine life after its warm-up."""

from reliability.load import COMPLETE, ERROR, HUNG, Outcome
from reliability.soak import WARM_UP_S, Kill, Run, Sample, failure_cause, memory_growth, report

KILLS = [Kill(at=100.0, ready_after=30.0)]


def outcome(started: float, ended: float, result: str = ERROR) -> Outcome:
    return Outcome(0, "stream", started, ended, result, "" if result == COMPLETE else "why")


def test_failures_are_told_apart_by_when_they_happened() -> None:
    assert failure_cause(outcome(95, 101), KILLS) == "cut"  # in flight at the kill
    assert failure_cause(outcome(110, 110.1), KILLS) == "refused"  # sent while the engine was down
    assert failure_cause(outcome(200, 201), KILLS) == "otherwise"  # nothing to excuse it


def test_memory_growth_is_judged_per_engine_after_its_warm_up() -> None:
    mb = 2**20
    samples = [
        Sample(t, True, (50 + t / 100) * mb, (1000 + (t % 300)) * mb, 1 if t < 300 else 2) for t in range(0, 600, 5)
    ]
    rows, operator_growth, engine_growth = memory_growth(samples, started=0)
    assert abs(operator_growth - (595 - WARM_UP_S) / 100) < 0.01
    assert round(engine_growth) == 295 - WARM_UP_S  # each engine grew from its own warm-up on
    assert len(rows) == 3


def test_the_report_counts_every_outcome_once() -> None:
    run = Run(0.0, kills=KILLS)
    run.outcomes = [
        outcome(1, 3, COMPLETE),
        outcome(95, 101),
        outcome(110, 110.1),
        outcome(200, 201),
        outcome(300, 400, HUNG),
    ]
    text = report(run, minutes=10, clients=1)
    assert "| 5 | 1 | 1 | 1 | 2 | 1 |" in text  # total, whole, cut, refused, otherwise (error + hung), hung
