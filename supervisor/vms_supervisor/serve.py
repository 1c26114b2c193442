"""`vms serve` after its checks: render the supervisord config into a run directory and run supervisord.

supervisord runs in its own session, so a Ctrl-C in the terminal reaches only this process, which turns it into
one SIGTERM for supervisord: the operator drains, then the engine stops, in that order. The exit code is 0 for a
clean stop and 1 when the operator died (the watchdog's marker) or supervisord failed.
"""

import contextlib
import ctypes
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from vms_supervisor.settings import Settings
from vms_supervisor.supervisord_config import render
from vms_supervisor.watchdog import marker_path

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: if `vms serve` is killed outright, supervisord gets SIGTERM rather than living on."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the parent's signal forwarding still applies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def run_supervisord(settings: Settings, engine_argv: list[str], device: str) -> int:
    temporary = settings.run_dir is None
    run_dir = Path(tempfile.mkdtemp(prefix="vms-")) if temporary else settings.run_dir
    config = render(settings, run_dir, engine_argv, device)
    print(f"vms: run directory {run_dir} (engine log: {run_dir}/logs/engine.log)", file=sys.stderr, flush=True)
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "--nodaemon", "--configuration", str(config)],
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )

    def forward(signum: int, _frame) -> None:
        supervisord.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    code = supervisord.wait()
    if marker_path(run_dir).exists():
        print(f"vms: error: the operator exited unexpectedly; logs in {run_dir}/logs", file=sys.stderr)
        return 1
    if code != 0:
        print(f"vms: error: supervisord exited with code {code}; logs in {run_dir}/logs", file=sys.stderr)
        return 1
    if temporary:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0
