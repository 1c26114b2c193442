"""`vms serve` after its checks: render the supervisord config into a run directory and run supervisord.

supervisord runs in its own session, so a Ctrl-C in the terminal reaches only this process, which turns it into
one SIGTERM for supervisord: the operator drains, then the engine stops, in that order. The exit code is 0 for a
clean stop and 1 when the operator died (the watchdog's marker) or supervisord failed.

`vms serve` is a child subreaper: if supervisord itself is killed, its children (operator, engine and the
engine's own processes) are handed to `vms serve` instead of init, and are stopped before it exits, so a dead
supervisord never leaves an engine serving with nobody watching (in the container, the exit then ends it).
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from vms_supervisor.json_logs import say
from vms_supervisor.prctl import PR_SET_CHILD_SUBREAPER, die_with_parent, prctl
from vms_supervisor.settings import Settings
from vms_supervisor.supervisord_config import render
from vms_supervisor.watchdog import marker_path

LEFTOVER_GRACE_S = 10.0


def reap_adopted(keep_pid: int) -> None:
    """As a subreaper we inherit orphans (a killed engine's children, killed in turn by the operator): reap them
    as they die, as init would, so none lingers as a zombie. `keep_pid` (supervisord) is left to Popen.wait."""

    def reap(_signum: int, _frame) -> None:
        for child in psutil.Process().children():
            if child.pid != keep_pid:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(child.pid, os.WNOHANG)

    signal.signal(signal.SIGCHLD, reap)


def stop_leftovers(grace_s: float = LEFTOVER_GRACE_S) -> int:
    """SIGTERM every process still below us (orphans handed over as subreaper), SIGKILL what outlives `grace_s`;
    returns how many there were."""
    leftovers = psutil.Process().children(recursive=True)
    for process in leftovers:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(leftovers, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(leftovers)


class RunDirError(Exception):
    """A place a run writes to (the temporary directory, the run directory) cannot be written."""


def temporary_directory() -> Path:
    """The temporary directory, which model preparation and the run directory need; one line when there is none
    (a read-only root filesystem without a tmpfs at /tmp, say)."""
    try:
        return Path(tempfile.gettempdir())
    except FileNotFoundError as error:  # Python tried TMPDIR, /tmp, /var/tmp, /usr/tmp and the working directory
        raise RunDirError(
            f"no writable temporary directory ({error.strerror}): give the container a tmpfs at /tmp "
            "(--tmpfs /tmp) or set TMPDIR to a writable place"
        ) from None


def make_run_dir(settings: Settings) -> Path:
    """VMS_RUN_DIR, or a fresh directory in the temporary one; one line naming the place when it cannot be made."""
    place = settings.run_dir or temporary_directory()
    try:
        if settings.run_dir is None:
            return Path(tempfile.mkdtemp(prefix="vms-", dir=place))
        (settings.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        return settings.run_dir
    except OSError as error:
        raise RunDirError(
            f"the run directory cannot be made in {place} ({error.strerror or error}): give the container a tmpfs "
            "there (--tmpfs /tmp) or set VMS_RUN_DIR to a writable place"
        ) from None


def run_supervisord(settings: Settings, engine_argv: list[str], device: str) -> int:
    temporary = settings.run_dir is None
    run_dir = make_run_dir(settings)
    config = render(settings, run_dir, engine_argv, device)
    json_format = settings.log_format == "json"
    say(f"run directory {run_dir} (engine log: {run_dir}/logs/engine.log)", json_format)
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    supervisord = subprocess.Popen(
        [sys.executable, "-m", "supervisor.supervisord", "--nodaemon", "--configuration", str(config)],
        start_new_session=True,
        preexec_fn=die_with_parent,  # `vms serve` killed outright: supervisord gets SIGTERM
    )

    def forward(signum: int, _frame) -> None:
        supervisord.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    reap_adopted(supervisord.pid)
    code = supervisord.wait()
    started = time.monotonic()
    leftovers = stop_leftovers()
    if leftovers:
        say(
            f"stopped {leftovers} process(es) supervisord left behind in {time.monotonic() - started:.1f} s",
            json_format,
        )
    if marker_path(run_dir).exists():
        say(f"the operator exited unexpectedly; logs in {run_dir}/logs", json_format, "error")
        return 1
    if code != 0:
        say(f"supervisord exited with code {code}; logs in {run_dir}/logs", json_format, "error")
        return 1
    if temporary:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0
