"""The image under the policies platform teams run it with: read-only root filesystem with a tmpfs for /tmp, every
capability dropped, no new privileges, and an arbitrary uid with gid 0 (OpenShift's convention), with no change to
the image. It serves a chat; without a writable /tmp it stops with one line naming the place.

Podman (the CI sandbox) gives a --read-only container writable tmpfs mounts at /tmp and /var/tmp by itself, Docker
does not; the second test masks them with read-only ones to get Docker's behaviour."""

import random
from collections.abc import Iterator

import pytest

from .conftest import TAG, assert_answers_the_capital_of_france, free_port, wait_ready

pytestmark = pytest.mark.container

RESTRICTED = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "network_mode": "host",
    "init": True,
    "shm_size": "1g",
}


def arbitrary_user() -> str:
    return f"{random.randint(20_000, 2_000_000_000)}:0"


@pytest.fixture(scope="module")
def restricted(docker, image) -> Iterator[dict]:
    port, admin_port = free_port(), free_port()
    user = arbitrary_user()
    container = docker.containers.run(
        TAG,
        detach=True,
        user=user,
        tmpfs={"/tmp": "rw,size=512m"},
        environment={"VMS_HOST": "127.0.0.1", "VMS_PORT": str(port), "VMS_ADMIN_PORT": str(admin_port)},
        **RESTRICTED,
    )
    served = {"container": container, "base": f"http://127.0.0.1:{port}", "admin": f"http://127.0.0.1:{admin_port}"}
    try:
        wait_ready(served)
        yield {**served, "user": user}
    finally:
        container.remove(force=True, v=True)


def test_a_read_only_capability_less_container_under_an_arbitrary_uid_serves_a_chat(restricted) -> None:
    identity = restricted["container"].exec_run(["id", "-u"]).output.decode().strip()
    assert identity == restricted["user"].split(":")[0]
    written = restricted["container"].exec_run(["touch", "/opt/probe"])
    assert written.exit_code != 0 and "Read-only file system" in written.output.decode()
    assert_answers_the_capital_of_france(restricted["base"])


def test_without_a_writable_tmp_it_stops_with_one_line_naming_it(docker, image) -> None:
    container = docker.containers.run(
        TAG,
        detach=True,
        user=arbitrary_user(),
        tmpfs={"/tmp": "ro", "/var/tmp": "ro"},
        environment={"VMS_HOST": "127.0.0.1", "VMS_PORT": str(free_port()), "VMS_ADMIN_PORT": str(free_port())},
        **RESTRICTED,
    )
    try:
        result = container.wait(timeout=600)
        logs = container.logs().decode()
    finally:
        container.remove(force=True, v=True)
    errors = [line for line in logs.splitlines() if line.startswith("vms: error:") or "Traceback" in line]
    assert result["StatusCode"] == 2, logs[-3000:]
    assert len(errors) == 1 and "no writable temporary directory" in errors[0] and "/tmp" in errors[0], logs[-3000:]
