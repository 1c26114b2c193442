"""Which device a vLLM worker computes on, and how its tensor-parallel ranks meet.

VMS_DEVICE=ascend puts the workers on NPUs (the operator resolves VMS_DEVICE=auto before the engine starts);
anything else on the CPU. On Ascend each rank takes the NPU of its local rank, through vLLM's own mapping of local
ranks to devices (`Platform.logical_device_id_to_visible_device_id`): local rank i is the i-th NPU of the rank's
share on the host (a data-parallel replica's, or the NPUs Ray gave this node's ranks), numbered as this process
sees them (ASCEND_RT_VISIBLE_DEVICES, set by the user, the container runtime or Ray, renumbers them from 0). The
ranks' HCCL group meets at vLLM's master address on a port of its own beside vLLM's master port.

Ray schedules every rank on one unit of the resource named NPU (`RAY_RANK_RESOURCE`): an Atlas host's Ray node
finds its NPUs itself; a CPU node declares how many ranks it takes (`ray start --resources '{"NPU": 2}'`), since
Ray gives ranks ids only for accelerator resources and vLLM's Ray executor places ranks by them.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

DEVICE_VARIABLE = "VMS_DEVICE"
VISIBLE_DEVICES_VARIABLE = "ASCEND_RT_VISIBLE_DEVICES"
HCCL_PORT_OFFSET = 1  # vLLM's master port + this: where MindSpore's TCP store for HCCL listens
RAY_RANK_RESOURCE = "NPU"  # Ray's name for Ascend NPUs
_REMEDY = "lower --tensor-parallel-size or make more NPUs visible"


@dataclass(frozen=True)
class WorkerDevice:
    target: str  # MindSpore's device target: "CPU" or "Ascend"
    device_id: int | None  # the NPU, as this process numbers the visible ones

    @property
    def is_ascend(self) -> bool:
        return self.target == "Ascend"


CPU = WorkerDevice("CPU", None)


def on_ascend(environ: Mapping[str, str]) -> bool:
    return environ.get(DEVICE_VARIABLE, "cpu").strip().lower() == "ascend"


def device_control_variable(environ: Mapping[str, str], cpu_variable: str) -> str:
    """The variable through which vLLM maps local ranks to devices: the visible NPUs on Ascend, else what vLLM's
    CPU platform uses (its visible NUMA nodes)."""
    return VISIBLE_DEVICES_VARIABLE if on_ascend(environ) else cpu_variable


def local_device_index(local_rank: int, dp_local_rank: int | None, ranks_per_replica: int) -> int:
    """The visible NPU of a rank started by vLLM's multiprocessing executor: replica d's local rank i takes
    d * ranks_per_replica + i (what vLLM's mapping gives there), so that data-parallel replicas on one host use
    different NPUs."""
    return (dp_local_rank or 0) * ranks_per_replica + local_rank


def worker_device(
    local_rank: int, environ: Mapping[str, str], visible_index: Callable[[int], int] = lambda rank: rank
) -> WorkerDevice:
    """The device of the rank; `visible_index` maps its local rank to the NPU as this process numbers them."""
    if not on_ascend(environ):
        return CPU
    visible = [device for device in environ.get(VISIBLE_DEVICES_VARIABLE, "").split(",") if device.strip()]
    shown = f"{VISIBLE_DEVICES_VARIABLE}={','.join(visible)} shows {len(visible)}"
    try:
        index = visible_index(local_rank)
    except (IndexError, RuntimeError) as error:
        raise ValueError(f"local rank {local_rank} has no NPU: {shown} ({error}); {_REMEDY}") from None
    if visible and index >= len(visible):
        raise ValueError(f"local rank {local_rank} has no NPU: {shown}; {_REMEDY}")
    return WorkerDevice("Ascend", index)


def hccl_init_method(master_addr: str, master_port: int) -> str:
    return f"tcp://{master_addr}:{master_port + HCCL_PORT_OFFSET}"
