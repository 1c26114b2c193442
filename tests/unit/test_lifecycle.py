"""The operator's engine state machine, driven with a fake clock: transitions, backoff timing, crash loops."""

import pytest

from vms_supervisor.lifecycle import HISTORY_LENGTH, Action, Lifecycle, Policy, State

POLICY = Policy(
    start_timeout=60,
    failure_threshold=3,
    backoff_initial=1,
    backoff_max=8,
    backoff_factor=2,
    crash_loop_limit=4,
    crash_loop_window=100,
)


@pytest.fixture
def engine() -> Lifecycle:
    lifecycle = Lifecycle(POLICY)
    assert lifecycle.start(0) == Action.START
    return lifecycle


def test_starting_becomes_ready_when_health_answers(engine: Lifecycle) -> None:
    assert engine.observe(5, running=True, healthy=False) == Action.NONE
    assert engine.state == State.STARTING and not engine.ready
    engine.observe(10, running=True, healthy=True)
    assert engine.state == State.READY and engine.ready


def test_failed_checks_make_it_unhealthy_then_restart_at_the_threshold(engine: Lifecycle) -> None:
    engine.observe(1, True, True)
    assert engine.observe(2, True, False) == Action.NONE
    assert engine.state == State.UNHEALTHY and not engine.ready
    assert engine.observe(3, True, False) == Action.NONE
    assert engine.observe(4, True, False) == Action.KILL  # third failure in a row: it cannot stop gracefully
    assert engine.state == State.RESTARTING and engine.restarts == 1
    assert "/health failed 3 times in a row" in engine.last_error


def test_a_lost_rank_restarts_the_whole_engine_at_once(engine: Lifecycle) -> None:
    engine.observe(1, True, True)
    assert engine.observe(2, True, False, lost_process="worker DP0 TP1 (pid 42)") == Action.KILL
    assert engine.state == State.RESTARTING and not engine.ready and engine.restarts == 1
    assert engine.last_error == "worker DP0 TP1 (pid 42) exited"


def test_a_rank_that_ended_before_the_main_process_is_named_as_the_reason(engine: Lifecycle) -> None:
    engine.observe(1, True, True)
    assert engine.observe(2, False, False, lost_process="worker DP0 TP1 (pid 42)") == Action.STOP
    assert engine.state == State.RESTARTING and engine.last_error == "worker DP0 TP1 (pid 42) exited"


def test_a_process_lost_while_starting_is_left_to_the_start_to_report(engine: Lifecycle) -> None:
    assert engine.observe(1, True, False, lost_process="engine core DP0 TP0 (pid 42)") == Action.NONE
    assert engine.state == State.STARTING
    engine.observe(2, False, False)
    assert engine.last_error == "the engine process exited"


def test_one_good_check_clears_unhealthy(engine: Lifecycle) -> None:
    engine.observe(1, True, True)
    engine.observe(2, True, False)
    engine.observe(3, True, True)
    assert engine.state == State.READY
    engine.observe(4, True, False)
    engine.observe(5, True, False)
    assert engine.state == State.UNHEALTHY  # the count started again


def test_restart_waits_its_backoff_then_starts(engine: Lifecycle) -> None:
    engine.observe(1, True, True)
    assert engine.observe(10, running=False, healthy=False) == Action.STOP
    assert engine.last_error == "the engine process exited"
    assert engine.observe(10.5, False, False) == Action.NONE  # backoff 1 s not over
    assert engine.observe(11, False, False) == Action.START
    assert engine.state == State.STARTING


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [POLICY.backoff(n) for n in range(6)] == [1, 2, 4, 8, 8, 8]


def test_each_restart_in_the_window_waits_longer(engine: Lifecycle) -> None:
    now, waits = 0.0, []
    for _ in range(3):
        engine.observe(now, running=False, healthy=False)
        started = now
        while engine.observe(now, False, False) != Action.START:
            now += 0.25
        waits.append(now - started)
    assert waits == [1, 2, 4]


def test_crash_loop_ends_in_failed_and_stays_there(engine: Lifecycle) -> None:
    now = 0.0
    for _ in range(POLICY.crash_loop_limit):
        assert engine.observe(now, running=False, healthy=False) == Action.STOP
        while engine.observe(now, False, False) != Action.START:
            now += 0.5
    assert engine.observe(now, running=False, healthy=False) == Action.STOP
    assert engine.state == State.FAILED and not engine.ready
    assert engine.last_error.startswith("crash loop: 4 restarts within 100 s")
    assert engine.observe(now + 1000, running=False, healthy=False) == Action.NONE
    assert engine.start(now + 1000) == Action.START  # a manual start begins afresh
    assert engine.state == State.STARTING and engine.last_error is None


def test_restarts_outside_the_window_do_not_count(engine: Lifecycle) -> None:
    now = 0.0
    for _ in range(10):  # one crash every 60 s: never 4 within 100 s
        engine.observe(now, running=False, healthy=False)
        while engine.observe(now, False, False) != Action.START:
            now += 1
        now += 60
    assert engine.state == State.STARTING and engine.restarts == 10


def test_start_timeout_restarts_an_engine_that_never_answers(engine: Lifecycle) -> None:
    assert engine.observe(59, True, False) == Action.NONE
    assert engine.observe(61, True, False) == Action.KILL
    assert "did not answer /health within 60 s" in engine.last_error


def test_stopped_engine_is_left_alone(engine: Lifecycle) -> None:
    assert engine.stop(5) == Action.STOP
    assert engine.observe(6, running=False, healthy=False) == Action.NONE
    assert engine.state == State.STOPPED


def test_history_keeps_every_change_with_its_time_and_reason(engine: Lifecycle) -> None:
    engine.observe(2, True, True)
    engine.observe(3, True, False)
    engine.observe(4, running=False, healthy=False)
    engine.observe(6, False, False)
    engine.stop(7, "stop requested through the admin API")
    assert [(t.at, t.before, t.after, t.reason) for t in engine.history] == [
        (0, State.STOPPED, State.STARTING, "start requested"),
        (2, State.STARTING, State.READY, "/health answered"),
        (3, State.READY, State.UNHEALTHY, "/health did not answer"),
        (4, State.UNHEALTHY, State.RESTARTING, "the engine process exited"),
        (6, State.RESTARTING, State.STARTING, "restart after its backoff"),
        (7, State.STARTING, State.STOPPED, "stop requested through the admin API"),
    ]


def test_history_is_bounded(engine: Lifecycle) -> None:
    for now in range(1, 500):
        engine.stop(now)
    assert len(engine.history) == HISTORY_LENGTH and engine.history[-1].at == 499
