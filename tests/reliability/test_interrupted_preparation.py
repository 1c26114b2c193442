"""Model preparation killed mid-conversion (SIGKILL: nothing can clean up) leaves no model a later run would
trust nor a conversion running on, and the next run converts again, clears the killed run's staging directory and
ends complete. The conversion runs in a child process, so the ~1 GB it takes is never held by `vms` itself (which,
as `vms serve`, lives as long as the service)."""

import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
from conftest import VMS

from vms_supervisor.default_model import is_prepared

MiB = 2**20


def staging_dirs(cache: Path) -> list[Path]:
    return sorted(cache.glob(".model.tmp-*"))


def peak_rss_while_running(process: subprocess.Popen) -> tuple[int, int]:
    """Peak resident bytes of `process` itself and of its largest child, sampled until it ends."""
    own, child, watched = 0, 0, psutil.Process(process.pid)
    while process.poll() is None:
        try:
            own = max(own, watched.memory_info().rss)
            child = max([child] + [c.memory_info().rss for c in watched.children()])
        except psutil.Error:  # it, or a child, ended while being read
            pass
        time.sleep(0.1)
    return own, child


def test_a_killed_preparation_is_redone_by_the_next_run(tmp_path: Path) -> None:
    cache, target = tmp_path / "cache", tmp_path / "cache" / "model"
    command = [VMS, "model", "prepare", "--output", str(target)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(any(path.iterdir()) for path in staging_dirs(cache) if path.is_dir()):  # converting, part written
        assert first.poll() is None, "the preparation ended before it could be interrupted"
        assert time.monotonic() < deadline, "no staging directory appeared"
        time.sleep(0.05)
    converters = psutil.Process(first.pid).children()
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    _, alive = psutil.wait_procs(converters, timeout=30)
    assert converters and not alive, "the conversion outlived the killed `vms model prepare`"

    assert not target.exists() and not is_prepared(target)
    assert staging_dirs(cache), "the killed run's staging directory is the leftover the next run must clear"

    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    own_peak, child_peak = peak_rss_while_running(second)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-2000:]
    assert Path(stdout.strip()) == target and is_prepared(target)
    assert own_peak < 300 * MiB, f"vms itself held {own_peak / MiB:.0f} MiB while converting"
    assert child_peak > 600 * MiB, f"the conversion child peaked at {child_peak / MiB:.0f} MiB"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in target.iterdir()}
    assert staging_dirs(cache) == []
