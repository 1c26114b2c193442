"""Which device the engine runs on, and with how many chips: VMS_DEVICE and VMS_TENSOR_PARALLEL_SIZE resolved
against what the probe found."""

from dataclasses import dataclass

from vms_supervisor.npu_probe import ProbeResult
from vms_supervisor.settings import Settings


class DeviceError(Exception):
    """VMS_DEVICE=ascend (or a tensor-parallel size) that this host cannot honour; the message says why."""


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "ascend" or "cpu"
    tensor_parallel_size: int
    warning: str | None = None


def choose_device(settings: Settings, probe: ProbeResult) -> DeviceChoice:
    usable, reason = probe.usable()
    if settings.device == "cpu" or (settings.device == "auto" and not usable):
        warning = None if settings.device == "cpu" else f"VMS_DEVICE=auto: no usable Ascend NPU ({reason}); using CPU"
        if settings.tensor_parallel_size not in ("auto", "1"):
            raise DeviceError(f"VMS_TENSOR_PARALLEL_SIZE={settings.tensor_parallel_size}: the CPU path runs on 1")
        return DeviceChoice("cpu", 1, warning)
    if not usable:
        raise DeviceError(f"VMS_DEVICE=ascend but {reason}")
    healthy = len(probe.healthy_chips)
    if settings.tensor_parallel_size == "auto":
        return DeviceChoice("ascend", healthy)
    size = int(settings.tensor_parallel_size)
    if size > healthy:
        raise DeviceError(f"VMS_TENSOR_PARALLEL_SIZE={size} but only {healthy} healthy chip(s) were found")
    return DeviceChoice("ascend", size)
