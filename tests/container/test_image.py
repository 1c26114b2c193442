"""The image as an operator uses it, through the Docker API (the daemonless sandbox in CI: podman, host network).

Built once per session with the cpu flavour on the sandbox's local Python base; then run with env
configuration, a fake NPU device node and a fake `npu-smi` printing a real Atlas 800I A2 output. Skipped, loudly,
when no Docker API answers (see `make image-test`).
"""

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_browser import console

from .conftest import BASE_IMAGE, REPO, REVISION, TAG, assert_answers_the_capital_of_france, free_port, wait_ready

pytestmark = pytest.mark.container

FIXTURE = REPO / "tests" / "unit" / "npu_smi" / "atlas_800i_a2_910b4_8chips.txt"
TOKEN = "container-token"
DRAIN_TIMEOUT_S = 20


def fake_npu_smi(directory: Path) -> Path:
    script = directory / "npu-smi"
    script.write_text(f"#!/bin/sh\ncat /opt/npu-smi-output.txt\n# fixture: {FIXTURE.name}\n")
    script.chmod(0o755)
    return script


@pytest.fixture(scope="module")
def appliance(docker, image, tmp_path_factory) -> Iterator[dict]:
    port, admin_port = free_port(), free_port()
    script = fake_npu_smi(tmp_path_factory.mktemp("npu"))
    container = docker.containers.run(
        TAG,
        detach=True,
        network_mode="host",
        init=True,
        shm_size="1g",  # vLLM's shared-memory queues need more than Docker's default 64 MB
        devices=["/dev/null:/dev/davinci0:rwm"],
        volumes={
            str(script): {"bind": "/usr/local/bin/npu-smi", "mode": "ro"},
            str(FIXTURE): {"bind": "/opt/npu-smi-output.txt", "mode": "ro"},
        },
        environment={
            "VMS_DEVICE": "auto",
            "VMS_HOST": "127.0.0.1",
            "VMS_PORT": str(port),
            "VMS_ADMIN_PORT": str(admin_port),
            "VMS_ADMIN_TOKEN": TOKEN,
            "VMS_MAX_MODEL_LEN": "1024",
            "VMS_KV_CACHE_MEMORY": "256MiB",
            "VMS_DRAIN_TIMEOUT": str(DRAIN_TIMEOUT_S),
        },
    )
    served = {"container": container, "base": f"http://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin_port}"}
    try:
        wait_ready(served)
        yield served
    finally:
        container.reload()
        if container.status == "running":
            container.kill()
        container.remove(force=True, v=True)


def admin(served: dict, path: str) -> httpx.Response:
    return httpx.get(served["admin"] + path, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)


def test_image_runs_as_non_root_with_ports_labels_and_a_healthcheck(docker, image, appliance) -> None:
    config = image.attrs["Config"]
    assert config["User"] == "10001"  # the vms user, numeric for runAsNonRoot
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8081/tcp"}
    assert set(config["Volumes"]) == {"/var/cache/vms"}
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] == REVISION
    assert labels["org.opencontainers.image.base.name"] == BASE_IMAGE
    # Podman keeps the healthcheck in the container's configuration, not in the image inspect.
    healthcheck = docker.api.inspect_container(appliance["container"].id)["Config"]["Healthcheck"]
    assert "vms_supervisor.healthcheck" in " ".join(healthcheck["Test"])
    uid = appliance["container"].exec_run(["id", "-u"]).output.decode().strip()
    assert uid != "0"


def test_the_fake_npu_is_probed_but_without_cann_it_serves_on_cpu(appliance) -> None:
    devices = admin(appliance, "/admin/devices").json()
    assert devices["device_nodes"] == [0]  # /dev/davinci0, the fake node
    assert len(devices["npu_smi"]["chips"]) == 8
    assert devices["device"] == "cpu"
    assert admin(appliance, "/admin/status").json()["device"] == "cpu"
    logs = appliance["container"].logs().decode()
    assert "VMS_DEVICE=auto: no usable Ascend NPU" in logs and "CANN" in logs


def test_the_console_shows_the_fake_host_s_chips_and_the_engine_state(appliance) -> None:
    """The appliance's console in headless Chromium: the NPU table is the probe's reading of the fake npu-smi."""
    with console(appliance["admin"]) as page:
        page.log_in(TOKEN)
        page.wait_text("#state", "^ready$", timeout_s=120)
        rows = page.wait_text("#npu-table tbody", "910B4", timeout_s=30).splitlines()
        assert len(rows) == 8 and all("910B4" in row and "OK" in row for row in rows), rows
        assert rows[0].split("\t")[4:6] == ["2683 / 32768", "30"]  # HBM used / total and temperature of NPU 0
        assert "npu-smi 24.1.1" in page.text("#npu-note") and "Serving on cpu" in page.text("#npu-note")
        page.shot("appliance-fake-atlas-800i-a2")
        assert page.other_hosts() == [] and page.console_errors == []


def test_a_chat_completion_works_from_the_host(appliance) -> None:
    assert_answers_the_capital_of_france(appliance["base"])


def test_the_admin_api_needs_the_token(appliance) -> None:
    assert httpx.get(appliance["admin"] + "/admin/status", timeout=10).status_code == 401
    assert admin(appliance, "/admin/status").json()["state"] == "ready"


def test_docker_reports_the_container_healthy(docker, appliance) -> None:
    deadline = time.monotonic() + 120
    while True:
        health = docker.api.inspect_container(appliance["container"].id)["State"]["Health"]["Status"]
        if health == "healthy":
            return
        assert time.monotonic() < deadline, f"health status still {health!r}"
        time.sleep(2)


def test_docker_stop_exits_cleanly_within_the_drain_timeout(docker, appliance, measurement) -> None:
    container = appliance["container"]
    started = time.monotonic()
    container.stop(timeout=DRAIN_TIMEOUT_S + 30)
    took = time.monotonic() - started
    state = docker.api.inspect_container(container.id)["State"]
    assert state["ExitCode"] == 0, container.logs().decode()[-3000:]
    assert took < DRAIN_TIMEOUT_S + 30
    measurement(f"container: docker stop took {took:.1f} s")


# supervisord's argv holds "supervisor.supervisord" as one word (python -m ...); this script's own argv does not.
KILL_SUPERVISORD = (
    "import psutil; "
    "[p.kill() for p in psutil.process_iter(['cmdline']) if 'supervisor.supervisord' in (p.info['cmdline'] or [])]"
)


def test_a_killed_supervisord_ends_the_container_non_zero(docker, image) -> None:
    """Operator faults in the container: the orchestrator must see an exit (and restart), not a silent engine."""
    port, admin_port = free_port(), free_port()
    container = docker.containers.run(
        TAG,
        detach=True,
        network_mode="host",
        init=True,
        shm_size="1g",
        environment={"VMS_HOST": "127.0.0.1", "VMS_PORT": str(port), "VMS_ADMIN_PORT": str(admin_port)},
    )
    served = {"container": container, "base": f"http://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin_port}"}
    try:
        wait_ready(served)
        assert container.exec_run(["python3", "-c", KILL_SUPERVISORD]).exit_code == 0
        result = container.wait(timeout=120)
        logs = container.logs().decode()
        assert result["StatusCode"] != 0, logs[-3000:]
        assert "supervisord exited" in logs or "left behind" in logs, logs[-3000:]
    finally:
        container.remove(force=True, v=True)


def test_a_bad_setting_exits_2_with_the_message(docker, image) -> None:
    container = docker.containers.run(
        TAG, detach=True, network_mode="host", init=True, environment={"VMS_PORT": "99999"}
    )
    try:
        result = container.wait(timeout=120)
        logs = container.logs().decode()
        assert result["StatusCode"] == 2, logs
        assert "VMS_PORT=" in logs and "65535" in logs
    finally:
        container.remove(force=True, v=True)
