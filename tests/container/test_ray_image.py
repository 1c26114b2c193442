"""One image as a two-node deployment: a container serving as the head (VMS_DISTRIBUTED_EXECUTOR_BACKEND=ray, which
starts the Ray head beside the engine) and a container with VMS_ROLE=ray-worker joining it, each taking one of the
2 tensor-parallel ranks of a tiny model. The worker answers its probes and Docker reports it healthy; the head
answers requests; both stop cleanly."""

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import TAG, free_port, wait_ready

pytestmark = pytest.mark.container

MODEL_MOUNT = "/models/tiny"
STOP_TIMEOUT_S = 90
HEALTHY_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def readable_model(served_tiny_model_dir: Path) -> Iterator[Path]:
    """The tiny model where the image's user (uid 10001) can read it; pytest's directories are private to root."""
    directory = Path(tempfile.mkdtemp(prefix="vms-ray-model-"))
    target = directory / "tiny"
    shutil.copytree(served_tiny_model_dir, target)
    for path in (directory, target, *target.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    yield target
    shutil.rmtree(directory, ignore_errors=True)


def run(docker, environment: dict[str, str], **options):
    return docker.containers.run(
        TAG,
        detach=True,
        network_mode="host",
        init=True,
        shm_size="1g",  # Ray's object store and vLLM's queues live in shared memory
        environment={"VMS_HOST": "127.0.0.1", **environment},
        **options,
    )


def wait_healthy(docker, container) -> None:
    deadline = time.monotonic() + HEALTHY_TIMEOUT_S
    while True:
        health = docker.api.inspect_container(container.id)["State"]["Health"]["Status"]
        if health == "healthy":
            return
        assert time.monotonic() < deadline, f"health status still {health!r}: {container.logs().decode()[-3000:]}"
        time.sleep(2)


def test_one_image_serves_as_ray_head_and_ray_worker(docker, image, readable_model: Path, measurement) -> None:
    ray_port, port, admin_port, worker_admin_port = (free_port() for _ in range(4))
    model = {str(readable_model): {"bind": MODEL_MOUNT, "mode": "ro"}}  # every rank reads its part of it
    started = time.monotonic()
    head = run(
        docker,
        {
            "VMS_PORT": str(port),
            "VMS_ADMIN_PORT": str(admin_port),
            "VMS_MODEL": MODEL_MOUNT,
            "VMS_DISTRIBUTED_EXECUTOR_BACKEND": "ray",
            "VMS_RAY_PORT": str(ray_port),
            "VMS_TENSOR_PARALLEL_SIZE": "2",
            "VMS_MAX_MODEL_LEN": "512",
            "VMS_KV_CACHE_MEMORY": "256MiB",
        },
        volumes=model,
    )
    worker = run(
        docker,
        {
            "VMS_ROLE": "ray-worker",
            "VMS_RAY_ADDRESS": f"127.0.0.1:{ray_port}",
            "VMS_ADMIN_PORT": str(worker_admin_port),
        },
        volumes=model,
    )
    try:
        worker_probes = f"http://127.0.0.1:{worker_admin_port}"
        wait_ready({"container": worker, "admin": worker_probes})
        assert httpx.get(worker_probes + "/health/live", timeout=5).status_code == 200
        ready = httpx.get(worker_probes + "/health/ready", timeout=5).json()
        assert (ready["status"], ready["state"]) == ("ok", "joined")
        wait_ready({"container": head, "admin": f"http://127.0.0.1:{admin_port}"})
        measurement(f"container: Ray head + ray-worker ready after {time.monotonic() - started:.0f} s")
        body = {"model": MODEL_MOUNT, "prompt": "Count:", "max_tokens": 8, "ignore_eos": True}
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 8
        rank = worker.exec_run(["python3", "-c", RANK_PROCESSES]).output.decode().split()
        assert rank == ["1"], worker.logs().decode()[-3000:]  # the worker container holds one of the two ranks
        wait_healthy(docker, worker)
        for container in (worker, head):
            container.stop(timeout=STOP_TIMEOUT_S)
            state = docker.api.inspect_container(container.id)["State"]
            assert state["ExitCode"] == 0, container.logs().decode()[-3000:]
    finally:
        for container in (worker, head):
            container.remove(force=True, v=True)


# How many of vLLM's rank actors (Ray titles their processes ray::RayWorkerProc) run in the container.
RANK_PROCESSES = (
    "import psutil; "
    "titles = [(p.info['cmdline'] or [''])[0] for p in psutil.process_iter(['cmdline'])]; "
    "print(sum(title.startswith('ray::RayWorkerProc') for title in titles))"
)
