"""The operator's parts on their own: the rendered supervisord config, the engine operator against stand-in
supervisord and engine (real processes where process handling is the point), log files, the engine's HTTP
answers and the watchdog's event protocol. The whole operator with the real engine: tests/integration."""

import configparser
import io
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest
from titled_processes import end_tree, start_tree

from vms_supervisor import operator as operator_module
from vms_supervisor.engine_http import EngineEndpoint
from vms_supervisor.engine_processes import engine_ranks
from vms_supervisor.log_files import MAX_TAIL_BYTES, LogFollower, tail
from vms_supervisor.operator import EngineOperator
from vms_supervisor.settings import Settings
from vms_supervisor.supervisor_client import ProgramInfo, SupervisorGone
from vms_supervisor.supervisord_config import render
from vms_supervisor.watchdog import marker_path


def test_supervisord_config_runs_the_engine_command_unchanged_and_supervised(tmp_path: Path) -> None:
    run_dir = tmp_path / "run dir"
    engine = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", "/models/my model 100%"]
    config = configparser.ConfigParser(interpolation=None)
    settings = Settings(drain_timeout=45, engine_log_max_bytes="2MiB", engine_log_backups=7)
    config.read(render(settings, run_dir, engine, "cpu"))

    def argv(program: str) -> list[str]:
        return shlex.split(config[f"program:{program}"]["command"].replace("%%", "%"))

    assert argv("engine") == engine
    assert argv("operator")[-4:] == ["--run-dir", str(run_dir), "--device", "cpu"]
    program = config["program:engine"]
    assert (program["autostart"], program["stopasgroup"], program["killasgroup"]) == ("false", "true", "true")
    assert (program["stdout_logfile_maxbytes"], program["stdout_logfile_backups"]) == (str(2 << 20), "7")
    # supervisord stops higher priority numbers first: the operator drains before the engine is stopped.
    assert int(config["program:operator"]["priority"]) > int(program["priority"])
    assert int(config["program:operator"]["stopwaitsecs"]) > 45
    assert (run_dir / "logs").is_dir()


def read_engine_environment(tmp_path: Path) -> dict[str, str]:
    from supervisor.datatypes import dict_of_key_value_pairs

    config = configparser.ConfigParser(interpolation=None)
    config.read(render(Settings(), tmp_path, ["vllm"], "cpu"))
    return dict_of_key_value_pairs(config["program:engine"]["environment"])


def test_the_engine_core_is_forked_unless_the_user_chose_a_start_method(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    assert read_engine_environment(tmp_path) == {"VLLM_WORKER_MULTIPROC_METHOD": "fork"}
    monkeypatch.setenv("VLLM_WORKER_MULTIPROC_METHOD", "spawn")  # inherited by the engine as it is
    assert read_engine_environment(tmp_path) == {}


class StandInSupervisor:
    def __init__(self) -> None:
        self.info = ProgramInfo("STOPPED", None)
        self.calls: list[str] = []
        self.gone = False

    def engine(self) -> ProgramInfo:
        if self.gone:
            raise SupervisorGone("SHUTDOWN_STATE")
        return self.info

    def start_engine(self) -> None:
        self.calls.append("start")
        self.info = ProgramInfo("RUNNING", os.getpid())  # a live process stands in

    def stop_engine(self) -> None:
        self.calls.append("stop")
        self.info = ProgramInfo("STOPPED", None)


class StandInEngine:
    def __init__(self) -> None:
        self.answers = False
        self.requests = [0]

    def healthy(self, timeout: float) -> bool:
        return self.answers

    def in_flight(self) -> int:
        return self.requests.pop(0) if len(self.requests) > 1 else self.requests[0]

    def metrics(self) -> str:
        return ""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


@pytest.fixture
def parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(operator_module, "DRAIN_POLL_SECONDS", 0)
    supervisor, engine = StandInSupervisor(), StandInEngine()
    settings = Settings(drain_timeout=10, health_interval=1)
    return EngineOperator(settings, tmp_path, "cpu", supervisor, engine, clock=Clock()), supervisor, engine


def test_ready_only_after_the_engine_answers(parts) -> None:
    operator, supervisor, engine = parts
    stop = threading.Event()
    stop.set()
    operator.run(stop)  # starts the engine, then returns at once
    assert supervisor.calls == ["start"]
    operator.check()
    assert not operator.ready() and not operator.has_started()
    engine.answers = True
    operator.check()
    assert operator.ready() and operator.has_started()
    assert operator.status()["engine_pid"] == os.getpid()


def serving(parts) -> tuple[EngineOperator, StandInEngine]:
    """The operator with its engine started and answering, as before a SIGTERM."""
    operator, supervisor, engine = parts
    supervisor.start_engine()
    engine.answers = True
    operator.lifecycle.start(0)
    operator.check()
    assert operator.ready()
    return operator, engine


def test_drain_turns_readiness_off_first_and_waits_for_requests_in_flight(parts) -> None:
    operator, engine = serving(parts)
    engine.requests = [3, 2, 1, 0]
    operator.drain()
    assert not operator.ready() and operator.status()["draining"]
    assert engine.requests == [0]


def test_drain_gives_up_at_the_drain_timeout(parts) -> None:
    operator, engine = serving(parts)
    engine.requests = [5]  # never finishes
    started = operator.clock.now
    operator.drain()
    assert operator.clock.now - started >= operator.settings.drain_timeout


def test_the_loop_ends_quietly_when_supervisord_shuts_down(parts) -> None:
    operator, supervisor, _ = parts
    supervisor.gone = True
    operator.run(threading.Event())  # would loop forever if SupervisorGone escaped or were ignored
    assert operator.status()["engine_pid"] is None


def test_what_a_dead_engine_leaves_behind_in_its_process_group_is_killed(parts) -> None:
    operator, supervisor, _ = parts
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)  # its own process group, like the engine
    try:
        supervisor.info = ProgramInfo("RUNNING", leftover.pid)
        operator.lifecycle.start(0)
        operator.check()
        supervisor.info = ProgramInfo("EXITED", None)  # the main process died; this child did not
        operator.check()
        assert leftover.wait(timeout=5) == -signal.SIGKILL
        assert operator.lifecycle.last_error == "the engine process exited"
    finally:
        leftover.kill()


def test_an_engine_that_has_ended_counts_as_exited_before_supervisord_reaps_it(parts) -> None:
    operator, supervisor, engine = parts
    ended = subprocess.Popen(["true"], start_new_session=True)  # not waited for: a zombie, as until a reap
    while psutil.Process(ended.pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    supervisor.info = ProgramInfo("RUNNING", ended.pid)  # supervisord has not noticed yet
    engine.answers = True  # whatever its port answers
    operator.lifecycle.start(0)
    operator.check()
    assert operator.lifecycle.last_error == "the engine process exited"
    assert supervisor.calls == ["stop"]  # supervisord is made to catch up before the next start
    ended.wait()


def test_an_engine_that_stops_answering_is_killed_not_stopped_gracefully(parts) -> None:
    operator, supervisor, engine = parts
    hung = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        hung.send_signal(signal.SIGSTOP)  # SIGTERM would stay pending until the stop timeout ran out
        supervisor.info = ProgramInfo("RUNNING", hung.pid)
        engine.answers = True
        operator.lifecycle.start(0)
        operator.check()
        engine.answers = False
        for _ in range(operator.settings.health_failure_threshold):
            operator.check()
        assert hung.wait(timeout=5) == -signal.SIGKILL
        assert supervisor.calls == ["stop"] and operator.lifecycle.restarts == 1
    finally:
        hung.kill()


TWO_RANKS = {  # vLLM's API server over an engine core with two tensor-parallel workers
    "title": "VLLM::APIServer",
    "children": [
        {"title": "VLLM::EngineCore", "children": [{"title": "VLLM::Worker_TP0"}, {"title": "VLLM::Worker_TP1"}]}
    ],
}


@pytest.mark.parametrize("first", ["worker", "main process"])
def test_the_process_that_ended_first_is_the_reason_even_when_both_ended_between_checks(
    first: str, parts, tmp_path: Path
) -> None:
    """A killed rank makes vLLM end its main process within a second, often before the next check; a killed main
    process takes the ranks after it. Either way, the operator's reason names the one that fell first."""
    operator, supervisor, engine = parts
    server = start_tree(tmp_path, TWO_RANKS, ranks=3)
    try:
        supervisor.info = ProgramInfo("RUNNING", server.pid)
        engine.answers = True
        operator.lifecycle.start(0)
        operator.check()
        assert operator.ready()
        worker = next(rank for rank in engine_ranks(server.pid, "cpu") if rank["tp_rank"] == 1)
        ends = [worker["pid"], server.pid] if first == "worker" else [server.pid, worker["pid"]]
        for pid in ends:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        supervisor.info = ProgramInfo("EXITED", None)
        operator.check()
        expected = f"worker DP0 TP1 (pid {worker['pid']}) exited" if first == "worker" else "the engine process exited"
        assert operator.lifecycle.last_error == expected
    finally:
        end_tree(server)


def test_log_tail_reads_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("".join(f"line {n}\n" for n in range(50_000)))
    assert tail(log, 3) == "line 49997\nline 49998\nline 49999"
    assert tail(tmp_path / "missing.log", 3) == ""


def test_log_tail_continues_into_the_rotated_files(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    (tmp_path / "engine.log.2").write_text("a\nb\n")
    (tmp_path / "engine.log.1").write_text("c\nd\n")
    log.write_text("")  # rotated a moment ago
    assert tail(log, 3) == "b\nc\nd"
    log.write_text("e\n")
    assert tail(log, 100) == "a\nb\nc\nd\ne"


def test_log_tail_is_bounded_in_bytes_however_long_the_lines(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text("x" * (5 * MAX_TAIL_BYTES) + "\nlast\n")  # one enormous line, as a logged huge prompt makes
    text = tail(log, 10)
    assert MAX_TAIL_BYTES - 16 < len(text) <= MAX_TAIL_BYTES and text.endswith("\nlast")


def test_log_tail_never_shows_the_admin_token(tmp_path: Path) -> None:
    operator = EngineOperator(Settings(admin_token="s3cret-token"), tmp_path, "cpu", StandInSupervisor(), None)
    log = tmp_path / "logs" / "engine.log"
    log.parent.mkdir()
    log.write_text("Received request cmpl-1: params: SamplingParams(stop=['s3cret-token'])\n")
    assert operator.log_tail(10) == "Received request cmpl-1: params: SamplingParams(stop=['[redacted]'])"


def test_log_follower_echoes_new_lines_across_a_rotation(tmp_path: Path) -> None:
    log, out, stop = tmp_path / "engine.log", io.StringIO(), threading.Event()
    log.write_text("first\n")
    follower = LogFollower(log, "engine | ".__add__, stop, out)
    follower.start()
    try:
        wait_for(lambda: "engine | first\n" in out.getvalue())
        with log.open("a") as handle:  # written just before the rotation, possibly unread yet
            handle.write("last before rotation\n")
        log.rename(tmp_path / "engine.log.1")  # what supervisord does at its size limit
        log.write_text("after rotation\n")
        wait_for(lambda: "engine | after rotation\n" in out.getvalue())
        assert out.getvalue().index("last before rotation") < out.getvalue().index("after rotation")
    finally:
        stop.set()
        follower.join(timeout=5)


def wait_for(condition, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.05)


class MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = (
            b'vllm:num_requests_running{engine="0",model_name="m"} 2.0\n'
            b'vllm:num_requests_waiting{engine="0",model_name="m"} 1.0\n'
            b"vllm:num_requests_running_total 99.0\n"
        )
        self.send_response(200 if self.path in ("/metrics", "/health") else 404)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_in_flight_counts_running_and_waiting_requests() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = EngineEndpoint("0.0.0.0", server.server_address[1])  # bound to all: reached on loopback
        assert endpoint.in_flight() == 3
        assert endpoint.healthy(timeout=2)
    finally:
        server.shutdown()


def test_an_engine_that_accepts_but_never_answers_is_unhealthy() -> None:
    with socket.socket() as listener:  # like a SIGSTOPped engine: the kernel accepts, nobody answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        endpoint = EngineEndpoint("127.0.0.1", listener.getsockname()[1])
        started = time.monotonic()
        assert not endpoint.healthy(timeout=0.5)
        assert time.monotonic() - started < 3
        assert endpoint.in_flight(timeout=0.5) is None


def event(name: str, payload: str) -> str:
    return (
        f"ver:3.0 server:supervisor serial:1 pool:watchdog poolserial:1 eventname:{name} len:{len(payload)}\n{payload}"
    )


def test_watchdog_ignores_the_engine_and_marks_the_operator_exit(tmp_path: Path) -> None:
    engine_exit = event(
        "PROCESS_STATE_EXITED", "processname:engine groupname:engine from_state:RUNNING expected:0 pid:7"
    )
    operator_exit = event("PROCESS_STATE_EXITED", "processname:operator groupname:operator from_state:RUNNING pid:8")
    result = subprocess.run(
        [sys.executable, "-m", "vms_supervisor.watchdog", "--run-dir", str(tmp_path)],
        input=engine_exit + operator_exit,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "READY\nRESULT 2\nOKREADY\nRESULT 2\nOKREADY\n"
    assert "processname" in marker_path(tmp_path).read_text()
    assert "the operator exited" in result.stderr
