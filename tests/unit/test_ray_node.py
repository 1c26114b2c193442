"""The appliance as a Ray node: the `ray start` command lines of the head and of a ray-worker, the head's place in
the supervisord config, the engine's command and environment with Ray, and what a ray-worker's probes report of a
real node process. The whole thing with real Ray nodes: tests/reliability/test_ray_serving.py."""

import configparser
import json
import shlex
import socket
import sys
import time
from pathlib import Path

import pytest

from vms_supervisor.device import choose_device
from vms_supervisor.engine_command import engine_argv, engine_environment
from vms_supervisor.npu_probe import ProbeResult
from vms_supervisor.ray_node import ray_start_argv
from vms_supervisor.ray_worker import HEAD_CHECK_REUSE_S, RayWorkerNode
from vms_supervisor.settings import Settings, SettingsError, load_settings
from vms_supervisor.supervisord_config import RAY_HEAD_PROGRAM, render

RAY_HEAD = {"distributed_executor_backend": "ray", "ray_port": 6400}


def resources(argv: list[str]) -> dict | None:
    given = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--resources=")]
    return json.loads(given[0]) if given else None


def test_a_cpu_node_declares_its_ranks_as_npus_and_an_ascend_node_lets_ray_count_them() -> None:
    worker = Settings(role="ray-worker", ray_address="10.0.0.1:6379")
    argv = ray_start_argv(worker, "cpu", head=False)
    assert argv[1:4] == ["start", "--block", "--disable-usage-stats"]
    assert "--address=10.0.0.1:6379" in argv and "--head" not in argv
    assert resources(argv) == {"NPU": 1}
    assert resources(ray_start_argv(worker, "ascend", head=False)) is None
    four = Settings(role="ray-worker", ray_address="10.0.0.1:6379", ray_node_ranks="4")
    assert resources(ray_start_argv(four, "ascend", head=False)) == {"NPU": 4}
    head = ray_start_argv(Settings(**RAY_HEAD), "cpu", head=True)
    assert "--head" in head and "--port=6400" in head and not any(arg.startswith("--address") for arg in head)


def test_the_engine_runs_its_ranks_through_ray_at_the_given_or_its_own_head() -> None:
    own = Settings(**RAY_HEAD)
    assert shlex.join(engine_argv(own, Path("/m"), 2)).endswith(
        "--tensor-parallel-size 2 --distributed-executor-backend ray"
    )
    assert engine_environment(own)["RAY_ADDRESS"] == "127.0.0.1:6400"
    given = Settings(distributed_executor_backend="ray", ray_address="ray-head.default.svc:6379")
    assert engine_environment(given)["RAY_ADDRESS"] == "ray-head.default.svc:6379"
    assert "RAY_ADDRESS" not in engine_environment(Settings())
    assert "--distributed-executor-backend" not in engine_argv(Settings(), Path("/m"))


def read_config(settings: Settings, run_dir: Path) -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(render(settings, run_dir, ["vllm"], "cpu"))
    return config


def test_vms_serve_starts_a_ray_head_before_the_engine_only_when_no_cluster_is_given(tmp_path: Path) -> None:
    config = read_config(Settings(**RAY_HEAD), tmp_path / "own")
    head = config[f"program:{RAY_HEAD_PROGRAM}"]
    assert shlex.split(head["command"]) == ray_start_argv(Settings(**RAY_HEAD), "cpu", head=True)
    # supervisord starts lower priorities first and stops them last: the head outlives the engine on both ends.
    assert int(head["priority"]) < int(config["program:engine"]["priority"])
    assert (head["autostart"], head["autorestart"], head["stopasgroup"]) == ("true", "true", "true")
    given = Settings(distributed_executor_backend="ray", ray_address="10.0.0.1:6379")
    assert f"program:{RAY_HEAD_PROGRAM}" not in read_config(given, tmp_path / "given")
    assert f"program:{RAY_HEAD_PROGRAM}" not in read_config(Settings(), tmp_path / "plain")


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"role": "ray-worker"}, "VMS_ROLE=ray-worker needs VMS_RAY_ADDRESS, the Ray head to join (host:port)"),
        ({"ray_address": "head"}, "VMS_RAY_ADDRESS='head': expected the Ray head as host:port, e.g. 10.0.0.1:6379"),
        ({"ray_node_ranks": "0"}, "VMS_RAY_NODE_RANKS='0': expected auto or an integer >= 1"),
        ({"role": "head"}, "VMS_ROLE='head': Input should be 'serve' or 'ray-worker'"),
    ],
)
def test_a_bad_ray_setting_is_one_line_naming_it(variables, message) -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(**variables)
    assert raised.value.problems == [message]


def test_ranks_through_ray_may_outnumber_this_hosts_cores() -> None:
    settings = Settings(device="cpu", tensor_parallel_size="4", distributed_executor_backend="ray")
    assert choose_device(settings, ProbeResult(device_nodes=[]), cpu_cores=2).tensor_parallel_size == 4


def python_node(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_worker_is_ready_once_its_node_joined_and_the_head_answers() -> None:
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        node = RayWorkerNode(
            Settings(role="ray-worker", ray_address=address),
            python_node("import time; time.sleep(1); print('Ray runtime started.', flush=True); time.sleep(30)"),
        )
        node.start()
        assert not node.ready() and node.status()["state"] == "joining"
        assert node.joined.wait(10)
        assert node.ready() and node.has_started() and node.status()["state"] == "joined"
        head.close()  # the head goes away: not ready once the last check has aged, and the reason says which head
        time.sleep(HEAD_CHECK_REUSE_S)
        assert not node.ready()
        assert node.status()["last_error"] == f"the Ray head {address} does not answer"
        node.stop()
    assert node.status()["state"] == "stopped" and not node.ready()


def test_a_worker_whose_node_exits_says_so() -> None:
    node = RayWorkerNode(
        Settings(role="ray-worker", ray_address="127.0.0.1:9"), python_node("print('Ray runtime started.'); exit(3)")
    )
    node.start()
    node.process.wait(10)
    assert not node.ready()
    assert node.status()["last_error"] == "the Ray node exited with code 3"
