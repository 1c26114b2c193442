"""The operator with the real engine under real supervisord: readiness follows the engine, a killed engine comes
back, the admin API reports it, and SIGTERM drains an in-flight request before everything stops.

Tests run in file order on one `vms serve`; the SIGTERM test ends it.
"""

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from integration.served import Served, parse_metric, start, stop

pytestmark = pytest.mark.integration

HEALTH_INTERVAL = 1.0
FAILURE_THRESHOLD = 2


@pytest.fixture(scope="module")
def served(default_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, measurement) -> Iterator[Served]:
    env = {
        "VMS_HEALTH_INTERVAL": str(HEALTH_INTERVAL),
        "VMS_HEALTH_FAILURE_THRESHOLD": str(FAILURE_THRESHOLD),
        "VMS_RESTART_BACKOFF_INITIAL": "0.5",
        "VMS_DRAIN_TIMEOUT": "120",
        "VMS_MAX_MODEL_LEN": "1024",
    }
    served = start(tmp_path_factory.mktemp("operator"), env, "--model", str(default_model_dir))
    try:
        measurement(f"operator: engine ready {served.wait_ready(poll=0.2):.1f} s after vms serve started")
        yield served
    finally:
        stop(served)


def test_readiness_turned_true_only_once_the_engine_answered(served: Served) -> None:
    ready_while_engine_down = [sample for sample in served.samples if sample[1] == 200 and sample[2] != 200]
    assert ready_while_engine_down == []
    assert served.samples[0][1] == 503 or served.samples[0][1] == 0, "ready before the engine could have started"
    first_healthy = next(t for t, _, engine in served.samples if engine == 200)
    first_ready = next(t for t, ready, _ in served.samples if ready == 200)
    assert first_ready - first_healthy <= HEALTH_INTERVAL + 1.5  # noticed within about one check
    assert httpx.get(served.admin_url + "/health/startup", timeout=5).status_code == 200


def test_status_names_the_running_engine(served: Served) -> None:
    status = served.status()
    assert status["state"] == "ready" and status["ready"] is True and status["restarts"] == 0
    assert status["device"] == "cpu" and status["model"] == str(served_model_dir(served))
    assert status["versions"]["vllm"] and status["versions"]["mindspore"]
    engine = psutil.Process(status["engine_pid"])
    assert "vllm.entrypoints.openai.api_server" in " ".join(engine.cmdline())


def served_model_dir(served: Served) -> str:
    return served.process.args[served.process.args.index("--model") + 1]


def test_admin_endpoints_need_the_token_and_the_probes_do_not(served: Served) -> None:
    assert httpx.get(served.admin_url + "/admin/status", timeout=5).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(served.admin_url + "/admin/status", headers=wrong, timeout=5).status_code == 403
    assert httpx.get(served.admin_url + "/health/live", timeout=5).status_code == 200


def test_logs_and_metrics_come_from_the_engine(served: Served) -> None:
    logs = served.admin("GET", "/admin/logs", params={"lines": 40})
    assert logs.status_code == 200 and 0 < len(logs.text.splitlines()) <= 40
    assert "vllm" in served.admin("GET", "/admin/logs", params={"lines": 10000}).text.lower()
    assert served.admin("GET", "/admin/logs", params={"lines": 0}).status_code == 422
    metrics = served.admin("GET", "/metrics").text
    assert "vms_engine_ready 1.0" in metrics
    assert "vllm:num_requests_running" in metrics  # the engine's own exposition, relayed


def test_a_killed_engine_is_restarted_and_ready_again(served: Served, measurement) -> None:
    before = served.status()
    old_group = before["engine_pid"]
    killed_at = time.monotonic()
    os.kill(old_group, signal.SIGKILL)
    deadline = killed_at + 30
    while served.sample()[0] == 200:
        assert time.monotonic() < deadline, "readiness stayed true after the engine was killed"
        time.sleep(0.2)
    unready_after = time.monotonic() - killed_at
    recovered_after = unready_after + served.wait_ready()
    measurement(
        f"operator: readiness false {unready_after:.1f} s after SIGKILL; ready again after {recovered_after:.1f} s"
    )
    status = served.status()
    assert status["restarts"] == 1
    assert status["last_error"] == "the engine process exited"
    assert status["engine_pid"] != old_group
    leftovers = [p.pid for p in psutil.process_iter() if _group(p) == old_group]
    assert leftovers == [], "the killed engine's children (vLLM's engine core) were left running"
    reply = httpx.post(
        served.base_url + "/v1/completions",
        timeout=120,
        json={"model": served_model_dir(served), "prompt": "Hello", "max_tokens": 4},
    )
    assert reply.status_code == 200


def _group(process: psutil.Process) -> int | None:
    try:
        return os.getpgid(process.pid)
    except (ProcessLookupError, PermissionError):
        return None


def test_sigterm_drains_the_request_in_flight_then_exits_0(served: Served, measurement) -> None:
    tree = served.process_tree()
    body = {"model": served_model_dir(served), "prompt": "Once upon a time", "max_tokens": 120, "ignore_eos": True}
    result: dict = {}

    def complete() -> None:
        result["response"] = httpx.post(served.base_url + "/v1/completions", json=body, timeout=300)

    client = threading.Thread(target=complete)
    client.start()
    deadline = time.monotonic() + 60
    while parse_metric(served.admin("GET", "/metrics").text, "vllm:num_requests_running") < 1:
        assert time.monotonic() < deadline, "the request never started running"
        time.sleep(0.1)
    served.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    while served.sample()[0] == 200:  # vms serve -> supervisord -> operator: a signal relay, not a poll
        assert time.monotonic() - signalled < 2, "readiness must turn false at once on SIGTERM"
        time.sleep(0.05)
    measurement(f"operator: readiness false {time.monotonic() - signalled:.2f} s after SIGTERM")
    client.join(timeout=300)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 120
    assert served.process.wait(timeout=120) == 0, served.log_tail()
    time.sleep(1)
    assert [p.pid for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert "draining: 1 request(s) in flight" in served.log.read_text()
