"""Which device a vLLM worker computes on, and how its tensor-parallel ranks meet.

VMS_DEVICE=ascend puts the workers on NPUs (the operator resolves VMS_DEVICE=auto before the engine starts);
anything else on the CPU. On Ascend each rank takes the NPU of its local rank: ASCEND_RT_VISIBLE_DEVICES, set by
the user or the container runtime, renumbers the NPUs a process sees from 0, so local rank i is the i-th visible
one. The ranks' HCCL group meets at vLLM's master address on a port of its own beside vLLM's master port.
"""

from collections.abc import Mapping
from dataclasses import dataclass

DEVICE_VARIABLE = "VMS_DEVICE"
VISIBLE_DEVICES_VARIABLE = "ASCEND_RT_VISIBLE_DEVICES"
HCCL_PORT_OFFSET = 1  # vLLM's master port + this: where MindSpore's TCP store for HCCL listens


@dataclass(frozen=True)
class WorkerDevice:
    target: str  # MindSpore's device target: "CPU" or "Ascend"
    device_id: int | None  # the NPU, as this process numbers the visible ones

    @property
    def is_ascend(self) -> bool:
        return self.target == "Ascend"


CPU = WorkerDevice("CPU", None)


def local_device_index(local_rank: int, dp_local_rank: int | None, ranks_per_replica: int) -> int:
    """The device of a rank on this host, by vLLM's convention (its GPU worker): replica d's local rank i takes
    device d * ranks_per_replica + i, so that data-parallel replicas on one host use different NPUs."""
    return (dp_local_rank or 0) * ranks_per_replica + local_rank


def worker_device(local_rank: int, environ: Mapping[str, str]) -> WorkerDevice:
    if environ.get(DEVICE_VARIABLE, "cpu").strip().lower() != "ascend":
        return CPU
    visible = [device for device in environ.get(VISIBLE_DEVICES_VARIABLE, "").split(",") if device.strip()]
    if visible and local_rank >= len(visible):
        raise ValueError(
            f"local rank {local_rank} has no NPU: {VISIBLE_DEVICES_VARIABLE}={','.join(visible)} shows "
            f"{len(visible)}; lower --tensor-parallel-size or make more NPUs visible"
        )
    return WorkerDevice("Ascend", local_rank)


def hccl_init_method(master_addr: str, master_port: int) -> str:
    return f"tcp://{master_addr}:{master_port + HCCL_PORT_OFFSET}"
