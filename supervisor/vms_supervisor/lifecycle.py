"""The engine's life as the operator sees it: a state machine driven by observations, with restart backoff and
crash-loop detection. Pure logic with the clock passed in, so that timing is tested without waiting.

    starting -> ready -> unhealthy -> restarting -> starting -> ...
        any state -> failed   (crash-loop limit reached: readiness stays false until a manual start)
        any state -> stopped  (an operator stopped the engine)

The operator loop calls `observe()` every health interval with whether the engine process runs and whether its
/health answered, and carries out the returned action through supervisord. Every change of state is kept, with
when and why, in a short history for the console and /admin/status.
"""

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum


class State(StrEnum):
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


class Action(StrEnum):
    NONE = "none"
    START = "start"  # start the engine program
    STOP = "stop"  # stop it (before a restart, or for good)
    KILL = "kill"  # kill it outright: it does not answer, so a graceful stop would only wait for the stop timeout


HISTORY_LENGTH = 100


@dataclass(frozen=True)
class Transition:
    at: float  # the clock passed in (the operator's monotonic clock)
    before: State
    after: State
    reason: str


@dataclass(frozen=True)
class Policy:
    start_timeout: float
    failure_threshold: int
    backoff_initial: float
    backoff_max: float
    backoff_factor: float
    crash_loop_limit: int
    crash_loop_window: float

    def backoff(self, restarts_in_window: int) -> float:
        """Seconds to wait before restart number `restarts_in_window` (0-based): exponential, capped."""
        return min(self.backoff_initial * self.backoff_factor**restarts_in_window, self.backoff_max)


@dataclass
class Lifecycle:
    policy: Policy
    state: State = State.STOPPED
    restarts: int = 0  # since the operator started, for /admin/status and metrics
    last_error: str | None = None
    since: float = 0.0  # when the current state began
    history: deque[Transition] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    _restart_times: deque = field(default_factory=deque)
    _failed_checks: int = 0
    _start_at: float | None = None  # when a pending restart may start the engine

    @property
    def ready(self) -> bool:
        return self.state == State.READY

    def start(self, now: float, reason: str = "start requested") -> Action:
        """A start requested by the operator (at boot or through the admin API): counters begin afresh."""
        self._restart_times.clear()
        self.last_error = None
        self._enter(State.STARTING, now, reason)
        return Action.START

    def stop(self, now: float, reason: str = "stop requested") -> Action:
        self._enter(State.STOPPED, now, reason)
        return Action.STOP

    def observe(
        self, now: float, running: bool, healthy: bool, lost_process: str | None = None, why_ended: str | None = None
    ) -> Action:
        """`lost_process`: one of the engine's processes (a rank) that has ended while its main process runs, or
        before it ended; it counts once the engine has been ready (while starting, the engine's own start-up
        failure says why). `why_ended`: what ended it, when known (the OOM killer), added to the reason."""
        if self.state in (State.STOPPED, State.FAILED):
            return Action.NONE
        if self.state == State.RESTARTING:
            if now >= self._start_at:
                self._enter(State.STARTING, now, "restart after its backoff")
                return Action.START
            return Action.NONE
        if not running:  # a rank that ended first is why, once the engine has been ready
            first = lost_process if lost_process is not None and self.state != State.STARTING else None
            return self._restart(now, _ended(f"{first} exited" if first else "the engine process exited", why_ended))
        if self.state == State.STARTING:
            if healthy:
                self._enter(State.READY, now, "/health answered")
            elif now - self.since > self.policy.start_timeout:
                return self._restart(
                    now, f"the engine did not answer /health within {self.policy.start_timeout:g} s", Action.KILL
                )
            return Action.NONE
        # Once it has served: an engine that loses a process while starting fails its start on its own.
        if lost_process is not None:  # the engine cannot go on without it: end the rest of it too
            return self._restart(now, _ended(f"{lost_process} exited", why_ended), Action.KILL)
        if healthy:
            self._failed_checks = 0
            if self.state == State.UNHEALTHY:
                self._enter(State.READY, now, "/health answered again")
            return Action.NONE
        self._failed_checks += 1
        if self.state == State.READY:
            self._enter(State.UNHEALTHY, now, "/health did not answer", keep_checks=True)
        if self._failed_checks >= self.policy.failure_threshold:
            return self._restart(now, f"/health failed {self._failed_checks} times in a row", Action.KILL)
        return Action.NONE

    def _restart(self, now: float, reason: str, end: Action = Action.STOP) -> Action:
        """Count a restart and schedule it after the backoff (or give up in a crash loop); `end` is how the
        current engine is ended."""
        self.last_error = reason
        window_start = now - self.policy.crash_loop_window
        while self._restart_times and self._restart_times[0] < window_start:
            self._restart_times.popleft()
        if len(self._restart_times) >= self.policy.crash_loop_limit:
            self.last_error = (
                f"crash loop: {len(self._restart_times)} restarts within {self.policy.crash_loop_window:g} s; "
                f"last: {reason}"
            )
            self._enter(State.FAILED, now, self.last_error)
            return end
        self._start_at = now + self.policy.backoff(len(self._restart_times))
        self._restart_times.append(now)
        self.restarts += 1
        self._enter(State.RESTARTING, now, reason)
        return end

    def _enter(self, state: State, now: float, reason: str, keep_checks: bool = False) -> None:
        self.history.append(Transition(now, self.state, state, reason))
        self.state, self.since = state, now
        if not keep_checks:
            self._failed_checks = 0


def _ended(what: str, why: str | None) -> str:
    return f"{what}: {why}" if why else what
