"""Which device the engine runs on, and with how many chips: VMS_DEVICE and VMS_TENSOR_PARALLEL_SIZE resolved
against what the probe found."""

import os
from dataclasses import dataclass

from vms_supervisor.npu_probe import ProbeResult
from vms_supervisor.ray_node import uses_ray
from vms_supervisor.settings import Settings


class DeviceError(Exception):
    """VMS_DEVICE=ascend (or a tensor-parallel size) that this host cannot honour; the message says why."""


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "ascend" or "cpu"
    tensor_parallel_size: int
    warning: str | None = None


def choose_device(settings: Settings, probe: ProbeResult, cpu_cores: int | None = None) -> DeviceChoice:
    """`cpu_cores`: the cores this process may run on (default: its affinity), one per CPU rank at least."""
    usable, reason = probe.usable()
    if settings.device == "cpu" or (settings.device == "auto" and not usable):
        warning = None if settings.device == "cpu" else f"VMS_DEVICE=auto: no usable Ascend NPU ({reason}); using CPU"
        if settings.tensor_parallel_size == "auto":
            return DeviceChoice("cpu", 1, warning)
        size, cores = int(settings.tensor_parallel_size), cpu_cores or len(os.sched_getaffinity(0))
        if size > cores and not uses_ray(settings):  # Ray's ranks run on other nodes too
            raise DeviceError(
                f"VMS_TENSOR_PARALLEL_SIZE={size} but this host gives vms {cores} CPU core(s); "
                "each CPU rank needs a core of its own"
            )
        return DeviceChoice("cpu", size, warning)
    if not usable:
        raise DeviceError(f"VMS_DEVICE=ascend but {reason}")
    healthy = len(probe.healthy_chips)
    if settings.tensor_parallel_size == "auto":
        return DeviceChoice("ascend", healthy)
    size = int(settings.tensor_parallel_size)
    if size > healthy and not uses_ray(settings):
        raise DeviceError(f"VMS_TENSOR_PARALLEL_SIZE={size} but only {healthy} healthy chip(s) were found")
    return DeviceChoice("ascend", size)
