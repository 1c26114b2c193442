"""One engine over two Ray nodes, as an operator runs it with the appliance: a head `vms serve` with
VMS_DISTRIBUTED_EXECUTOR_BACKEND=ray (which starts the Ray head beside its engine) and a second `vms serve` with
VMS_ROLE=ray-worker joining it. Each node takes one of the 2 tensor-parallel ranks; the worker answers its
probes; requests are answered; SIGTERM to both leaves no Ray process behind."""

import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from integration.served import free_port, start, stop

pytestmark = pytest.mark.integration

TOKENS = 12
COMMON = {"VMS_MAX_MODEL_LEN": "512", "VMS_KV_CACHE_MEMORY": "256MiB"}
JOIN_TIMEOUT_S = 120
RANK_TITLE = "ray::RayWorkerProc"  # how Ray titles the actor process of a vLLM rank


def ray_processes_of(port: int) -> list[str]:
    """The command lines of Ray's processes of the cluster whose head listens on `port` (they all name it)."""
    commands = (" ".join(process.info["cmdline"] or []) for process in psutil.process_iter(["cmdline"]))
    return [command[:120] for command in commands if "ray" in command and str(port) in command]


def ranks_in(tree: list[psutil.Process]) -> list[psutil.Process]:
    ranks = []
    for process in tree:
        try:
            if process.cmdline()[0].startswith(RANK_TITLE):
                ranks.append(process)
        except (psutil.Error, IndexError):
            continue
    return ranks


def test_an_engine_over_a_head_and_a_ray_worker_node(served_tiny_model_dir: Path, tmp_path, measurement) -> None:
    ray_port = free_port()
    head_dir, worker_dir = tmp_path / "head", tmp_path / "worker"
    head_dir.mkdir(), worker_dir.mkdir()
    head_env = {
        **COMMON,
        "VMS_DISTRIBUTED_EXECUTOR_BACKEND": "ray",
        "VMS_RAY_PORT": str(ray_port),
        "VMS_TENSOR_PARALLEL_SIZE": "2",
    }
    started = time.monotonic()
    head = start(head_dir, head_env, "--model", str(served_tiny_model_dir))
    worker = None
    try:
        worker = start(worker_dir, {"VMS_ROLE": "ray-worker", "VMS_RAY_ADDRESS": f"127.0.0.1:{ray_port}"})
        worker.wait_ready(timeout=JOIN_TIMEOUT_S)
        probe = httpx.get(worker.admin_url + "/health/ready", timeout=5).json()
        assert (probe["status"], probe["state"]) == ("ok", "joined")
        head.wait_ready()
        ready_after = time.monotonic() - started
        body = {"model": str(served_tiny_model_dir), "prompt": "Count:", "max_tokens": TOKENS, "ignore_eos": True}
        answer = httpx.post(head.base_url + "/v1/completions", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == TOKENS
        # One rank on each node: an actor process below each node's Ray processes.
        assert len(ranks_in(head.process_tree())) == 1, head.log_tail()
        assert len(ranks_in(worker.process_tree())) == 1, worker.log_tail()
        assert "--distributed-executor-backend ray" in head.log.read_text()
    finally:
        for served in (head, worker):  # both at once, as an orchestrator stops a deployment
            if served is not None and served.process.poll() is None:
                served.process.send_signal(signal.SIGTERM)
        stop(head)
        if worker is not None:
            stop(worker)
    measurement(f"Ray, head + ray-worker vms serve, tensor parallel 2: ready after {ready_after:.0f} s")
    assert head.process.returncode == 0 and worker.process.returncode == 0
    deadline = time.monotonic() + 10
    while ray_processes_of(ray_port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not ray_processes_of(ray_port), ray_processes_of(ray_port)
