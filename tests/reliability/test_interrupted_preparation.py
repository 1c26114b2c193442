"""Model preparation killed mid-conversion (SIGKILL: nothing can clean up) leaves no model a later run would
trust, and the next run converts again, clears the killed run's staging directory and ends complete."""

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import VMS

from vms_supervisor.default_model import is_prepared


def staging_dirs(cache: Path) -> list[Path]:
    return sorted(cache.glob(".model.tmp-*"))


def test_a_killed_preparation_is_redone_by_the_next_run(tmp_path: Path) -> None:
    cache, target = tmp_path / "cache", tmp_path / "cache" / "model"
    command = [VMS, "model", "prepare", "--output", str(target)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(any(path.iterdir()) for path in staging_dirs(cache) if path.is_dir()):  # converting, part written
        assert first.poll() is None, "the preparation ended before it could be interrupted"
        assert time.monotonic() < deadline, "no staging directory appeared"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)

    assert not target.exists() and not is_prepared(target)
    assert staging_dirs(cache), "the killed run's staging directory is the leftover the next run must clear"

    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert Path(second.stdout.strip()) == target and is_prepared(target)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {path.name for path in target.iterdir()}
    assert staging_dirs(cache) == []
