"""The operator's handle on supervisord: start, stop and inspect the engine program over the XML-RPC socket."""

import threading
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from vms_supervisor.supervisord_config import ENGINE_PROGRAM, socket_path

RUNNING_STATES = {"STARTING", "RUNNING", "BACKOFF", "STOPPING"}


class SupervisorGone(Exception):
    """supervisord is shutting down or no longer answers: the operator's run is over."""


@dataclass(frozen=True)
class ProgramInfo:
    state: str  # supervisord's state name: STOPPED, STARTING, RUNNING, EXITED, FATAL, ...
    pid: int | None

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


class SupervisorClient:
    def __init__(self, run_dir: Path) -> None:
        transport = SupervisorTransport(serverurl=f"unix://{socket_path(run_dir)}")
        # The host part is ignored: the transport talks to the unix socket.
        self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        # One persistent connection, used by the health loop and the admin API's threads: one call at a time.
        self._lock = threading.Lock()

    def _call(self, method: str, *args):
        try:
            with self._lock:
                return getattr(self._rpc.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if "SHUTDOWN_STATE" in fault.faultString:
                raise SupervisorGone(fault.faultString) from None
            raise
        except OSError as error:  # the socket is gone with supervisord
            raise SupervisorGone(str(error)) from None

    def engine(self) -> ProgramInfo:
        info = self._call("getProcessInfo", ENGINE_PROGRAM)
        return ProgramInfo(info["statename"], info["pid"] or None)

    def start_engine(self) -> None:
        """Start the engine without waiting for it (its readiness is the health loop's business)."""
        if not self.engine().running:
            self._call("startProcess", ENGINE_PROGRAM, False)

    def stop_engine(self) -> None:
        """Stop the engine's whole process group, waiting until it is gone (SIGKILL after the stop timeout)."""
        if self.engine().running:
            try:
                self._call("stopProcess", ENGINE_PROGRAM, True)
            except xmlrpc.client.Fault as fault:
                if "NOT_RUNNING" not in fault.faultString:  # it exited while we asked
                    raise

    def shutdown(self) -> None:
        self._call("shutdown")
