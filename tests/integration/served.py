"""`vms serve` as a user runs it: a real process tree (supervisord, operator, vLLM engine) on free loopback ports."""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from conftest import VMS

START_TIMEOUT_S = 600
TOKEN = "integration-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Served:
    process: subprocess.Popen
    base_url: str
    admin_url: str
    log: Path
    run_dir: Path
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (time, /health/ready, engine /health)

    def admin(self, method: str, path: str, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return httpx.request(method, self.admin_url + path, headers=headers, timeout=60, **kwargs)

    def status(self) -> dict:
        return self.admin("GET", "/admin/status").json()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def sample(self) -> tuple[int, int]:
        """(admin readiness, engine /health) status codes now; 0 when nothing answers."""
        codes = []
        for url in (self.admin_url + "/health/ready", self.base_url + "/health"):
            try:
                codes.append(httpx.get(url, timeout=2).status_code)
            except httpx.TransportError:
                codes.append(0)
        self.samples.append((time.monotonic(), *codes))
        return codes[0], codes[1]

    def wait_ready(self, timeout: float = START_TIMEOUT_S, poll: float = 0.5) -> float:
        """Seconds until /health/ready answered 200, sampling readiness and engine health on the way."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.process.poll() is not None:
                pytest.fail(f"vms serve exited with {self.process.returncode}; log tail:\n{self.log_tail()}")
            if self.sample()[0] == 200:
                return time.monotonic() - start
            time.sleep(poll)
        pytest.fail(f"not ready after {timeout} s; log tail:\n{self.log_tail()}")

    def wait_state(self, state: str, timeout: float = START_TIMEOUT_S) -> dict:
        deadline, status = time.monotonic() + timeout, None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"vms serve exited with {self.process.returncode}; log tail:\n{self.log_tail()}")
            try:
                status = self.status()
            except httpx.TransportError:  # the admin API is not listening yet
                status = None
            if status and status["state"] == state:
                return status
            time.sleep(0.5)
        pytest.fail(f"state never became {state} (last: {status}); log tail:\n{self.log_tail()}")

    def process_tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def parse_metric(exposition: str, name: str) -> float:
    """One vLLM gauge or counter from Prometheus text, summed over its label sets."""
    lines = exposition.splitlines()
    values = [float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name + "{")]
    assert values, f"{name} not in /metrics"
    return sum(values)


def start(directory: Path, env: dict[str, str], *args: str, preexec: Callable[[], None] | None = None) -> Served:
    """Start `vms serve` with the admin token, a run directory in `directory` and `env` on top of the environment;
    `preexec` runs in the child before it becomes `vms serve` (to put it in a cgroup, say)."""
    port, admin_port = free_port(), free_port()
    admin_host = env.get("VMS_ADMIN_HOST", "127.0.0.1")
    log, run_dir = directory / "serve.log", directory / "run"
    env = {**os.environ, "VMS_ADMIN_TOKEN": TOKEN, "VMS_RUN_DIR": str(run_dir), "VMS_DEVICE": "cpu", **env}
    command = [VMS, "serve", "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin_port), *args]
    with log.open("a") as handle:  # append mode: supervisord's children write to the same file
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True, preexec_fn=preexec
        )
    return Served(process, f"http://127.0.0.1:{port}", f"http://{admin_host}:{admin_port}", log, run_dir)


def stop(served: Served) -> None:
    """Make sure nothing of the run is left: SIGTERM, then SIGKILL to whatever remains."""
    tree = served.process_tree()
    if served.process.poll() is None:
        served.process.send_signal(signal.SIGTERM)
        try:
            served.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            served.process.kill()
    for process in tree:
        if process.is_running():
            process.kill()


@contextmanager
def serving(
    directory: Path, env: dict[str, str], *args: str, preexec: Callable[[], None] | None = None
) -> Iterator[Served]:
    """`vms serve` started (see `start`) and ready; on the way out stopped with everything it started."""
    served = start(directory, env, *args, preexec=preexec)
    try:
        served.wait_ready()
        yield served
    finally:
        stop(served)
