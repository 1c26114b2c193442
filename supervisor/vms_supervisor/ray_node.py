"""This container as a Ray node: the head `vms serve` starts for its engine's ranks, or a worker node joining one.

vLLM's Ray executor places every rank on one unit of Ray's NPU resource (see vms_plugin/worker/device.py). On an
Atlas host Ray counts the node's NPUs itself; a CPU node declares the ranks it takes (VMS_RAY_NODE_RANKS, 1 by
default). `ray start --block` keeps the node's processes under one process that stops them all on SIGTERM.
"""

import json
import shutil
import sys
from pathlib import Path

from vms_plugin.worker.device import RAY_RANK_RESOURCE
from vms_supervisor.settings import Settings

RAY_ADDRESS_VARIABLE = "RAY_ADDRESS"  # where vLLM's Ray executor finds the cluster (ray.init)


def ray_executable() -> str:
    beside_python = Path(sys.executable).with_name("ray")
    return str(beside_python) if beside_python.exists() else shutil.which("ray") or "ray"


def node_ranks(settings: Settings, device: str) -> int | None:
    """The NPU units this node declares; None where Ray counts the NPUs itself."""
    if settings.ray_node_ranks != "auto":
        return int(settings.ray_node_ranks)
    return None if device == "ascend" else 1


def ray_start_argv(settings: Settings, device: str, *, head: bool) -> list[str]:
    argv = [ray_executable(), "start", "--block", "--disable-usage-stats"]
    if head:
        argv += ["--head", f"--port={settings.ray_port}", "--include-dashboard=false"]
    else:
        argv.append(f"--address={settings.ray_address}")
    ranks = node_ranks(settings, device)
    if ranks is not None:
        argv.append(f"--resources={json.dumps({RAY_RANK_RESOURCE: ranks})}")
    return argv


def uses_ray(settings: Settings) -> bool:
    return settings.distributed_executor_backend == "ray"


def starts_ray_head(settings: Settings) -> bool:
    """`vms serve` starts a Ray head beside its engine when the ranks go through Ray and no cluster is given."""
    return uses_ray(settings) and settings.ray_address is None


def engine_ray_address(settings: Settings) -> str:
    return settings.ray_address or f"127.0.0.1:{settings.ray_port}"
