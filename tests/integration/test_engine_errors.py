"""An engine that cannot start: the operator retries with backoff, declares a crash loop, keeps readiness false
and reports why; the engine's own message reaches the server's output."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from integration.served import Served, start, stop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def failing(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    # SmolLM2 at the default dtype (bfloat16): 30 layers x K and V x 128 tokens x 3 KV heads x 64 x 2 bytes
    # = 2.8 MiB per block; 25 MiB holds 8 blocks, and 2048 tokens need 16.
    env = {
        "VMS_KV_CACHE_MEMORY": "25MiB",
        "VMS_CRASH_LOOP_LIMIT": "1",  # the first failure is retried once; the second is a crash loop
        "VMS_RESTART_BACKOFF_INITIAL": "0.5",
        "VMS_HEALTH_INTERVAL": "1",
    }
    served = start(
        tmp_path_factory.mktemp("failing"), env, "--model", str(default_model_dir), "--max-model-len", "2048"
    )
    try:
        yield served
    finally:
        stop(served)


def test_an_engine_that_cannot_start_ends_in_failed_with_the_reason(failing: Served) -> None:
    status = failing.wait_state("failed")
    assert status["restarts"] == 1
    assert status["last_error"].startswith("crash loop: 1 restarts within 300 s; last: the engine process exited")
    ready = httpx.get(failing.admin_url + "/health/ready", timeout=5)
    assert ready.status_code == 503 and ready.json()["reason"] == status["last_error"]
    assert failing.process.poll() is None, "vms serve stays up (liveness) so that the reason can be read"
    output = failing.log.read_text()
    assert "the KV cache holds 8 blocks of 128 tokens" in output
    assert "max_model_len 2048 needs 16 blocks" in output


def test_a_manual_start_clears_the_failure_and_tries_again(failing: Served) -> None:
    reply = failing.admin("POST", "/admin/engine/start")
    assert reply.status_code == 200 and reply.json()["state"] == "starting" and reply.json()["last_error"] is None
    failing.wait_state("failed")  # the cache is still too small: it fails again, for the same reason
