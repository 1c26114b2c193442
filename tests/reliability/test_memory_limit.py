"""`vms serve` in a memory cgroup of its own with a limit (what `docker run --memory` gives a container).

The limit `vms config` prints for the default model holds a run under load with no OOM kill (its peak recorded).
The engine killed by the kernel's OOM killer: a process in the cgroup which the killer may not choose
(oom_score_adj -1000) takes memory until the cgroup is full, the kernel SIGKILLs the engine's largest process, and
/admin/status names the cause. The operator restarts the engine, which serves again."""

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import VMS
from integration.served import Served, serving

from vms_supervisor.memory_cgroup import MemoryCgroup, own_memory_cgroup

pytestmark = pytest.mark.integration

START_LIMIT = 8 * 2**30  # room to start; lowered once ready
HEADROOM = 384 * 2**20  # the limit once ready: what the run uses now, and this much more
OOM_CAUSE = "killed by the kernel's OOM killer (memory limit"
# Protected from the OOM killer, it takes memory in 64 MiB steps until the killer has struck in its cgroup.
HOG = """
import sys, time
open("/proc/self/oom_score_adj", "w").write("-1000")
counter, before, held = sys.argv[1], None, []
def kills():
    return int(dict(line.split() for line in open(counter))["oom_kill"])
before = kills()
while kills() == before and len(held) < 256:
    held.append(b"\\x01" * (64 << 20))
print(f"{len(held) * 64} MiB taken, oom kills {before} -> {kills()}", flush=True)
"""


def joining(cgroup: MemoryCgroup) -> Callable[[], None]:
    """What a child runs before it becomes its program: it moves itself into `cgroup`."""
    return lambda: (cgroup.directory / "cgroup.procs").write_text(str(os.getpid()))


def printed_limit(env: dict[str, str]) -> int:
    """The memory limit `vms config` prints for this configuration."""
    config = subprocess.run([VMS, "config"], env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    match = re.search(r"^memory: ([\d.]+) GiB \(", config.stdout, re.M)
    assert match, config.stdout + config.stderr
    return int(float(match.group(1)) * 2**30)


def peak(cgroup: MemoryCgroup) -> int:
    name = "memory.peak" if cgroup.version == 2 else "memory.max_usage_in_bytes"
    return int((cgroup.directory / name).read_text())


def limit_file(cgroup: MemoryCgroup) -> Path:
    return cgroup.directory / ("memory.max" if cgroup.version == 2 else "memory.limit_in_bytes")


def usage(cgroup: MemoryCgroup) -> int:
    name = "memory.current" if cgroup.version == 2 else "memory.usage_in_bytes"
    return int((cgroup.directory / name).read_text())


@pytest.fixture
def memory_cgroup() -> Iterator[MemoryCgroup]:
    """A child of this process's memory cgroup, limited; removed afterwards."""
    own = own_memory_cgroup()
    if own is None:
        pytest.skip("SKIPPED LOUDLY: no readable memory cgroup on this host")
    child = MemoryCgroup(own.directory / f"vms-memory-limit-{os.getpid()}", own.version)
    try:
        child.directory.mkdir()
    except OSError as error:
        pytest.skip(f"SKIPPED LOUDLY: cannot make a memory cgroup under {own.directory}: {error}")
    try:
        yield child
    finally:
        for _ in range(50):  # its processes are gone a moment after `vms serve` ends
            try:
                child.directory.rmdir()
                break
            except OSError:
                time.sleep(0.2)


async def crowd(url: str, body: dict, count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=600) as client:
        return [
            reply.status_code for reply in await asyncio.gather(*(client.post(url, json=body) for _ in range(count)))
        ]


def test_the_default_model_serves_under_load_within_the_limit_vms_config_prints(
    memory_cgroup: MemoryCgroup, default_model_dir, tmp_path, measurement
) -> None:
    env = {"VMS_MODEL": str(default_model_dir)}
    limit = printed_limit(env)
    limit_file(memory_cgroup).write_text(str(limit))
    with serving(tmp_path, env, preexec=joining(memory_cgroup)) as served:
        model = served.status()["model"]
        body = {
            "model": model,
            "prompt": "Tell me a long story about a lighthouse.",
            "max_tokens": 128,
            "ignore_eos": True,
        }
        codes = asyncio.run(crowd(served.base_url + "/v1/completions", body, 32))
        status = served.status()
    assert codes == [200] * 32
    assert status["oom_kills"] == 0 and status["restarts"] == 0 and status["memory_limit_bytes"] == limit
    used = peak(memory_cgroup)
    measurement(
        f"memory: vms config prints {limit / 2**30:.1f} GiB for the default model; peak {used / 2**30:.2f} GiB "
        "under 32 requests"
    )


def test_an_engine_killed_for_memory_is_reported_as_such_and_restarted(
    memory_cgroup: MemoryCgroup, served_tiny_qwen3_dir, tmp_path, measurement
) -> None:
    env = {"VMS_HEALTH_INTERVAL": "1", "VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB"}

    limit_file(memory_cgroup).write_text(str(START_LIMIT))
    with serving(tmp_path, env, "--model", str(served_tiny_qwen3_dir), preexec=joining(memory_cgroup)) as served:
        before = served.status()
        assert before["oom_kills"] == 0 and before["memory_limit_bytes"] == START_LIMIT
        limit = usage(memory_cgroup) + HEADROOM
        limit_file(memory_cgroup).write_text(str(limit))
        counter = memory_cgroup.directory / ("memory.events" if memory_cgroup.version == 2 else "memory.oom_control")
        hog = subprocess.run(
            [sys.executable, "-c", HOG, str(counter)],
            preexec_fn=joining(memory_cgroup),
            capture_output=True,
            text=True,
            timeout=120,
        )
        kills = re.search(r"oom kills (\d+) -> (\d+)", hog.stdout)
        assert hog.returncode == 0 and kills and int(kills[2]) > int(kills[1]) == 0, hog.stdout + hog.stderr
        status = wait_for_restart(served)
        assert OOM_CAUSE in status["last_error"], status["last_error"]
        assert status["oom_kills"] >= 1 and status["memory_limit_bytes"] == limit
        assert status["restarts"] >= 1
        served.wait_state("ready")
        model = served.status()["model"]
        reply = httpx.post(
            served.base_url + "/v1/completions", json={"model": model, "prompt": "Hi", "max_tokens": 4}, timeout=120
        )
        assert reply.status_code == 200, reply.text
        history = [change["reason"] for change in served.status()["history"]]
        assert any(OOM_CAUSE in reason for reason in history), history
    measurement(f"OOM kill: limit {limit / 2**30:.2f} GiB, reported as: {status['last_error']}")


def wait_for_restart(served: Served, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = served.status()
        if status["restarts"] >= 1:
            return status
        time.sleep(0.5)
    pytest.fail(f"no restart after the OOM kill: {served.status()}\n{served.log_tail()}")
