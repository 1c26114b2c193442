"""The model cache full or read-only, as a small or read-only tmpfs mounted for the test: model preparation (and
`vms serve`, which prepares the default model first) stops with exit 2 and one line naming the cache and what is
wrong, and leaves nothing a later run would trust; with room again, the next run prepares the model whole."""

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import VMS
from integration.served import free_port

from vms_supervisor.default_model import DEFAULT_MODEL_NAME, is_prepared

pytestmark = pytest.mark.integration

USAGE_ERROR = 2
MiB = 2**20


@contextmanager
def tmpfs(directory: Path, size_mib: int, read_only: bool = False) -> Iterator[Path]:
    directory.mkdir()
    options = f"size={size_mib}m" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"SKIPPED LOUDLY: cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); needs root")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)


def prepare(cache: Path, *args: str, during: Callable[[], None] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "VMS_MODEL_CACHE": str(cache)}
    process = subprocess.Popen(
        [VMS, *(args or ("model", "prepare"))], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    if during:
        during()
    stdout, stderr = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("vms: ") or "Traceback" in line]


def nothing_trusted(cache: Path) -> None:
    model = cache / DEFAULT_MODEL_NAME
    assert not is_prepared(model) and not model.exists()
    assert not list(cache.glob(f".{DEFAULT_MODEL_NAME}.tmp-*")), "a staging directory was left"


def test_a_cache_too_small_for_the_model_stops_before_converting(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "cache", 40) as cache:
        result = prepare(cache)
        assert result.returncode == USAGE_ERROR, result.stderr[-2000:]
        (line,) = error_lines(result)
        assert f"not enough space in the model cache {cache}" in line and "MiB are free" in line, line
        assert "Preparing" not in result.stderr  # refused before the conversion began
        nothing_trusted(cache)


def test_a_cache_that_fills_up_during_the_conversion_keeps_nothing_and_the_next_run_succeeds(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "cache", 800) as cache:
        filler = cache / "other-data"

        def fill_once_converting() -> None:
            deadline = time.monotonic() + 120
            while not list(cache.glob(f".{DEFAULT_MODEL_NAME}.tmp-*")):  # the conversion has begun
                assert time.monotonic() < deadline, "no staging directory appeared"
                time.sleep(0.05)
            with filler.open("wb") as handle:  # someone else takes the room the model was counting on
                os.posix_fallocate(handle.fileno(), 0, os.statvfs(cache).f_bavail * os.statvfs(cache).f_frsize)

        result = prepare(cache, during=fill_once_converting)
        assert result.returncode == USAGE_ERROR, result.stderr[-2000:]
        (line,) = error_lines(result)
        assert f"the model cache {cache} filled up while the default model was written" in line, line
        nothing_trusted(cache)
        filler.unlink()
        again = prepare(cache)
        assert again.returncode == 0, again.stderr[-2000:]
        assert is_prepared(cache / DEFAULT_MODEL_NAME)


@pytest.mark.parametrize("command", ["model prepare", "serve"])
def test_a_read_only_cache_stops_with_one_line(tmp_path: Path, command: str) -> None:
    ports = ("--port", str(free_port()), "--admin-port", str(free_port())) if command == "serve" else ()
    with tmpfs(tmp_path / "cache", 8, read_only=True) as cache:
        result = prepare(cache, *command.split(), *ports)
        assert result.returncode == USAGE_ERROR, result.stderr[-2000:]
        (line,) = error_lines(result)
        assert f"the model cache {cache} is not writable (Read-only file system)" in line, line
        nothing_trusted(cache)
