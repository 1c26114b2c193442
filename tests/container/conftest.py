"""The image, built once per session through the Docker API (the daemonless sandbox in CI: podman, host network)
with the cpu flavour on the sandbox's local Python base, and how the tests wait for a container. The tests are
skipped, loudly, when no Docker API answers (see `make image-test`)."""

import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from docker.errors import APIError, ImageNotFound

REPO = Path(__file__).resolve().parents[2]
TAG = "localhost/vms:test"
BASE_IMAGE = os.environ.get("VMS_TEST_BASE_IMAGE", "localhost/python-base:3.11")
REVISION = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
READY_TIMEOUT_S = 600


@pytest.fixture(scope="session")
def docker():
    try:
        import docker as docker_sdk

        client = docker_sdk.from_env(timeout=1800)
        client.ping()
    except Exception as error:  # any failure means there is no engine to test with
        pytest.skip(
            f"CONTAINER TESTS SKIPPED: no Docker API answers ({error}). Run "
            '`eval "$(../shared/tools/container-sandbox up)"` first, or `make image-test`.'
        )
    return client


def tagged_image_id(docker, tag: str) -> str | None:
    try:
        return docker.images.get(tag).id
    except ImageNotFound:
        return None


@pytest.fixture(scope="session")
def image(docker, measurement):
    started = time.monotonic()
    replaced = tagged_image_id(docker, TAG)
    built, _ = docker.images.build(
        path=str(REPO),
        tag=TAG,
        buildargs={"BASE_IMAGE": BASE_IMAGE, "FLAVOUR": "cpu"},
        labels={"org.opencontainers.image.version": "0.1.0", "org.opencontainers.image.revision": REVISION},
        network_mode="host",
        rm=True,
        forcerm=True,
        pull=False,
    )
    size_gb = built.attrs["Size"] / 1e9
    measurement(f"image {TAG} built in {time.monotonic() - started:.0f} s, {size_gb:.2f} GB")
    if replaced not in (None, built.id):
        # The tag moved: the previous build is left untagged, 7 GB each; a day of CI runs filled the disk.
        try:
            docker.images.remove(replaced)
            measurement(f"removed the image {TAG} replaced ({replaced[:19]})")
        except APIError as error:  # e.g. a container still uses it: keep it and say so
            measurement(f"kept the image {TAG} replaced ({replaced[:19]}): {error}")
    return built


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(served: dict) -> None:
    container, deadline = served["container"], time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "exited":
            pytest.fail(f"container exited: {container.logs().decode()[-4000:]}")
        try:
            if httpx.get(served["admin"] + "/health/ready", timeout=3).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(2)
    pytest.fail(f"not ready after {READY_TIMEOUT_S} s: {container.logs().decode()[-4000:]}")


def assert_answers_the_capital_of_france(base_url: str) -> None:
    """A greedy chat turn through the container's OpenAI API, answered correctly."""
    body = {
        "model": "SmolLM2-135M-Instruct",
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    reply = httpx.post(base_url + "/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]
