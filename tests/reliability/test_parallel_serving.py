"""`vms serve` with several ranks and replicas, as an operator runs it: VMS_DATA_PARALLEL_SIZE=2 answers concurrent
requests through both of vLLM's engine replicas, and with VMS_TENSOR_PARALLEL_SIZE=2 a tensor-parallel rank
SIGKILLed under load makes the operator restart the whole engine: readiness false within 3 s, no process of the
old engine left, every request sent after the recovery answered whole."""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil
import pytest
from integration.served import serving

from reliability.load import COMPLETE, Load, streams_of

pytestmark = pytest.mark.integration

CONCURRENT = 32
TOKENS = 16
UNREADY_BOUND_S = 3
RECOVERY_BOUND_S = 240
REQUEST_BOUND_S = 90
COMMON = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB", "VMS_HEALTH_INTERVAL": "1"}


def per_engine(exposition: str, name: str) -> dict[str, float]:
    """A vLLM counter summed per `engine` label (one per data-parallel replica)."""
    totals: dict[str, float] = {}
    for line in exposition.splitlines():
        if line.startswith(name + "{"):
            engine = line.split('engine="', 1)[1].split('"', 1)[0]
            totals[engine] = totals.get(engine, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals


async def completions(base_url: str, model: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=REQUEST_BOUND_S) as client:
        body = {"model": model, "max_tokens": TOKENS, "ignore_eos": True}
        return await asyncio.gather(
            *(
                client.post(base_url + "/v1/completions", json={**body, "prompt": f"Count to {i}:"})
                for i in range(count)
            )
        )


def test_two_data_parallel_replicas_share_concurrent_requests(default_model_dir: Path, tmp_path, measurement) -> None:
    env = {**COMMON, "VMS_DATA_PARALLEL_SIZE": "2"}
    with serving(tmp_path, env, "--model", str(default_model_dir)) as served:
        replicas = [rank for rank in served.status()["ranks"] if rank["role"] == "engine_core"]
        assert [rank["dp_rank"] for rank in replicas] == [0, 1]
        responses = asyncio.run(completions(served.base_url, str(default_model_dir), CONCURRENT))
        assert [response.status_code for response in responses] == [200] * CONCURRENT
        assert all(response.json()["usage"]["completion_tokens"] == TOKENS for response in responses)
        finished = per_engine(httpx.get(served.base_url + "/metrics").text, "vllm:request_success_total")
    measurement(f"data parallel 2: {CONCURRENT} concurrent requests, finished per replica {finished}")
    assert sorted(finished) == ["0", "1"] and sum(finished.values()) == CONCURRENT
    assert min(finished.values()) > 0


def test_a_killed_tensor_parallel_rank_restarts_the_whole_engine(
    served_tiny_model_dir: Path, tmp_path, measurement: Callable[[str], None]
) -> None:
    env = {**COMMON, "VMS_TENSOR_PARALLEL_SIZE": "2"}
    with serving(tmp_path, env, "--model", str(served_tiny_model_dir)) as served:
        before = served.status()
        workers = [rank for rank in before["ranks"] if rank["role"] == "worker"]
        assert [(rank["tp_rank"], rank["device"]) for rank in workers] == [(0, "cpu"), (1, "cpu")]
        old_engine = [rank["pid"] for rank in before["ranks"]]
        load = Load(served.base_url, streams_of(str(served_tiny_model_dir), TOKENS), 8, REQUEST_BOUND_S)
        load.start()
        time.sleep(5)
        killed_at = time.monotonic()
        os.kill(workers[1]["pid"], signal.SIGKILL)
        while served.sample()[0] == 200:
            assert time.monotonic() - killed_at < RECOVERY_BOUND_S, "readiness stayed true"
            time.sleep(0.05)
        unready_after = time.monotonic() - killed_at
        served.wait_ready(timeout=RECOVERY_BOUND_S)
        ready_after = time.monotonic() - killed_at
        back = time.monotonic()
        while sum(outcome.started >= back for outcome in list(load.outcomes)) < 16:
            assert time.monotonic() - back < REQUEST_BOUND_S, "no requests ended after the recovery"
            time.sleep(0.2)
        outcomes = load.finish()
        after = served.status()
    measurement(
        f"tensor parallel 2, rank 1 SIGKILLed under load: readiness false after {unready_after:.1f} s, "
        f"ready again after {ready_after:.1f} s"
    )
    assert unready_after < UNREADY_BOUND_S
    assert after["restarts"] == 1 and "worker DP0 TP" in after["last_error"]
    assert not [pid for pid in old_engine if _alive(pid)], "a process of the old engine outlived it"
    late = [outcome for outcome in outcomes if outcome.started >= back]
    assert late and all(outcome.result == COMPLETE for outcome in late), [o.detail for o in late if o.detail]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
