"""`vms serve` with VMS_ROLE=ray-worker: this container is a Ray node that lends its NPUs (or CPU cores) to the
engine of a head (`vms serve` with VMS_DISTRIBUTED_EXECUTOR_BACKEND=ray), and answers probes on VMS_ADMIN_PORT.

The node is `ray start --block` joining VMS_RAY_ADDRESS. Ready means: Ray said the node started, it still runs,
and the head's GCS port accepts a connection. When the node process ends the role exits 1 (the orchestrator
restarts the container); on SIGTERM it stops the node, which stops Ray's processes here, and exits 0.
"""

import socket
import subprocess
import sys
import threading
import time

from vms_supervisor.admin_server import serve_admin_api, stop_on_signals
from vms_supervisor.ray_node import ray_start_argv
from vms_supervisor.settings import Settings

STARTED_LINE = "Ray runtime started"  # what `ray start` prints once the node has joined
HEAD_CHECK_TIMEOUT_S = 2.0
HEAD_CHECK_REUSE_S = 1.0
STOP_TIMEOUT_S = 45.0  # Ray drains a node for up to 30 s on SIGTERM


class RayWorkerNode:
    """The node process and what the probes read of it."""

    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.address = settings.ray_address
        self.argv = argv
        self.process: subprocess.Popen | None = None
        self.joined = threading.Event()
        self.stopping = False
        self._head_checked_at = -HEAD_CHECK_REUSE_S
        self._head_answered = False

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        )
        threading.Thread(target=self._echo, name="ray-node-log", daemon=True).start()

    def _echo(self) -> None:
        for line in self.process.stdout:
            if STARTED_LINE in line:
                self.joined.set()
            print(f"ray | {line}", end="", flush=True)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def head_reachable(self) -> bool:
        """Whether the head accepts a connection. A probe asks twice (readiness, then the status giving its
        reason): both read one connection attempt, made at most every HEAD_CHECK_REUSE_S."""
        now = time.monotonic()
        if now - self._head_checked_at >= HEAD_CHECK_REUSE_S:
            self._head_answered = self._connect_to_head()
            self._head_checked_at = now
        return self._head_answered

    def _connect_to_head(self) -> bool:
        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=HEAD_CHECK_TIMEOUT_S):
                return True
        except OSError:
            return False

    def ready(self) -> bool:
        return not self.stopping and self.running() and self.joined.is_set() and self.head_reachable()

    def has_started(self) -> bool:
        return self.joined.is_set()

    def status(self) -> dict:
        return {
            "role": "ray-worker",
            "state": self._state(),
            "last_error": self._problem(),
            "draining": self.stopping,
            "ray_address": self.address,
            "node_pid": None if self.process is None else self.process.pid,
        }

    def _state(self) -> str:
        if not self.running():
            return "stopped"
        return "joined" if self.joined.is_set() else "joining"

    def _problem(self) -> str | None:
        if self.process is not None and self.process.poll() is not None:
            return f"the Ray node exited with code {self.process.returncode}"
        if self.joined.is_set() and not self.head_reachable():
            return f"the Ray head {self.address} does not answer"
        return None

    def stop(self) -> None:
        self.stopping = True
        if self.running():
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_ray_worker(settings: Settings, device: str) -> int:
    from vms_admin.app import create_probe_app

    node = RayWorkerNode(settings, ray_start_argv(settings, device, head=False))
    stop = stop_on_signals(lambda: setattr(node, "stopping", True))
    try:
        server, thread = serve_admin_api(create_probe_app(node), settings)
    except RuntimeError as error:
        print(f"vms: error: {error}", file=sys.stderr)
        return 1
    print(
        f"vms: Ray worker node joining {settings.ray_address} on {device} (probes on "
        f"http://{settings.admin_address}:{settings.admin_port}/health/ready)",
        file=sys.stderr,
        flush=True,
    )
    node.start()
    while not stop.is_set() and node.running():
        stop.wait(0.5)
    lost = not stop.is_set()
    node.stop()
    server.should_exit = True
    thread.join(timeout=5)
    if lost:
        print(f"vms: error: {node.status()['last_error']}", file=sys.stderr)
        return 1
    return 0
