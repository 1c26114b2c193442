"""The admin API's contract: open probes with Kubernetes semantics, token-guarded admin endpoints, metrics.

The operator behind it is the real state machine, settings and probe of this host, held in memory: the API
layer is what is under test here (the operator with real processes is tested in tests/integration).
"""

import pytest
from fastapi.testclient import TestClient

from vms_admin.app import create_app
from vms_supervisor.lifecycle import Lifecycle, Policy
from vms_supervisor.npu_probe import probe
from vms_supervisor.settings import Settings

TOKEN = "s3cret-token"
POLICY = Policy(60, 3, 1, 8, 2, 4, 100)


class InMemoryOperator:
    def __init__(self, token: str | None) -> None:
        self.settings = Settings(admin_token=token)
        self.lifecycle = Lifecycle(POLICY)
        self.lifecycle.start(0)
        self.actions: list[str] = []
        self.ever_ready = False

    def ready(self) -> bool:
        return self.lifecycle.ready

    def has_started(self) -> bool:
        return self.ever_ready

    def admin_token(self) -> str | None:
        return self.settings.token()

    def status(self) -> dict:
        life = self.lifecycle
        return {"state": str(life.state), "restarts": life.restarts, "last_error": life.last_error, "uptime_s": 1.5}

    def devices(self) -> dict:
        return probe().to_json()

    def config(self) -> dict:
        return self.settings.redacted()

    def control(self, action: str) -> None:
        self.actions.append(action)

    def log_tail(self, lines: int) -> str:
        return "\n".join(f"line {n}" for n in range(lines))

    def engine_metrics(self) -> str:
        return "vllm:num_requests_running 0.0\n"

    def become_ready(self) -> None:
        self.lifecycle.observe(1, running=True, healthy=True)
        self.ever_ready = True


@pytest.fixture
def operator() -> InMemoryOperator:
    return InMemoryOperator(TOKEN)


@pytest.fixture
def client(operator: InMemoryOperator) -> TestClient:
    return TestClient(create_app(operator))


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_liveness_is_open_and_always_ok(client: TestClient) -> None:
    assert client.get("/health/live").status_code == 200
    assert client.get("/v2/health/live").status_code == 200


def test_readiness_and_startup_follow_the_engine(client: TestClient, operator: InMemoryOperator) -> None:
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["state"] == "starting"
    assert client.get("/health/startup").status_code == 503
    operator.become_ready()
    assert client.get("/health/ready").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/health/startup").status_code == 200
    operator.lifecycle.observe(2, running=False, healthy=False)  # the engine died: restarting
    response = client.get("/health/ready")
    assert response.status_code == 503 and response.json()["reason"] == "the engine process exited"
    assert client.get("/health/startup").status_code == 200  # started once: startup stays passed


@pytest.mark.parametrize("path", ["/admin/status", "/admin/devices", "/admin/config", "/admin/logs", "/metrics"])
def test_admin_endpoints_need_the_token(client: TestClient, path: str) -> None:
    missing = client.get(path)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 403
    assert client.get(path, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
    assert client.get(path, headers=AUTH).status_code == 200


def test_without_a_configured_token_admin_is_closed_and_says_how_to_open_it() -> None:
    client = TestClient(create_app(InMemoryOperator(token=None)))
    response = client.get("/admin/status", headers=AUTH)
    assert response.status_code == 403
    assert "set VMS_ADMIN_TOKEN or VMS_ADMIN_TOKEN_FILE" in response.json()["detail"]
    assert client.get("/health/live").status_code == 200


def test_status_config_and_devices(client: TestClient) -> None:
    assert client.get("/admin/status", headers=AUTH).json()["state"] == "starting"
    config = client.get("/admin/config", headers=AUTH).json()
    assert config["VMS_ADMIN_TOKEN"] == "***" and TOKEN not in str(config)
    devices = client.get("/admin/devices", headers=AUTH).json()
    assert devices["usable"] is False and "davinci" in devices["reason"]


def test_engine_actions(client: TestClient, operator: InMemoryOperator) -> None:
    for action in ("restart", "stop", "start"):
        assert client.post(f"/admin/engine/{action}", headers=AUTH).status_code == 200
    assert operator.actions == ["restart", "stop", "start"]
    response = client.post("/admin/engine/explode", headers=AUTH)
    assert response.status_code == 404 and "allowed: start, stop, restart" in response.json()["detail"]


def test_logs_are_bounded(client: TestClient) -> None:
    assert client.get("/admin/logs?lines=3", headers=AUTH).text == "line 0\nline 1\nline 2"
    assert client.get("/admin/logs?lines=0", headers=AUTH).status_code == 422
    assert client.get("/admin/logs?lines=10001", headers=AUTH).status_code == 422


def test_metrics_has_operator_gauges_and_relays_the_engine(client: TestClient) -> None:
    text = client.get("/metrics", headers=AUTH).text
    assert 'vms_engine_state{state="starting"} 1.0' in text
    assert "vms_engine_ready 0.0" in text
    assert "vms_engine_restarts_total 0.0" in text
    assert text.endswith("vllm:num_requests_running 0.0\n")


def test_openapi_schema_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health/live", "/health/ready", "/health/startup", "/admin/status", "/metrics"} <= set(paths)
