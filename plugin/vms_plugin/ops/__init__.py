"""The compute a decoder layer needs beyond matmuls, behind one interface with one implementation per device.

`layer_ops()` picks the implementation once per process, from MindSpore's device target (`mindspore.set_device`
happens in the worker before the model is built) or from `VMS_OPS=cpu|ascend` (tests, and forcing a path). The
model files call the interface only (see interface.py), so they never know which implementation runs.
"""

import os
from functools import cache

from vms_plugin.ops.interface import LayerOps

OVERRIDE_ENV = "VMS_OPS"
IMPLEMENTATIONS = ("cpu", "ascend")


def device_for_ops(override: str | None, device_target: str) -> str:
    """Which implementation serves a process whose MindSpore device target is `device_target`."""
    if override:
        choice = override.strip().lower()
        if choice not in IMPLEMENTATIONS:
            raise ValueError(f"{OVERRIDE_ENV}={override!r}: allowed: {', '.join(IMPLEMENTATIONS)}")
        return choice
    return "ascend" if device_target.lower() == "ascend" else "cpu"


def build_layer_ops(device: str) -> LayerOps:
    if device == "ascend":
        from vms_plugin.ops.ascend import AscendOps

        return AscendOps()
    from vms_plugin.ops.cpu import CpuOps

    return CpuOps()


@cache
def layer_ops() -> LayerOps:
    import mindspore as ms

    return build_layer_ops(device_for_ops(os.environ.get(OVERRIDE_ENV), ms.get_context("device_target")))
