"""RMSNorm through the device's layer ops (ops/): one fused launch instead of five basic ops.

Called with a residual, it adds the residual first and returns the sum too, as vLLM's layers do: the add of
one layer and the norm of the next are one launch.
"""

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from vms_plugin.ops import layer_ops


class RMSNorm(nn.Cell):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = Parameter(initializer("ones", (size,), ms.float32), name="weight")
        self.eps = eps
        self.ops = layer_ops()

    def construct(self, x: ms.Tensor, residual: ms.Tensor | None = None) -> ms.Tensor | tuple[ms.Tensor, ms.Tensor]:
        """rms_norm(x), or (rms_norm(x + residual), x + residual)."""
        if residual is None:
            return self.ops.rms_norm(x, self.weight, self.eps)
        return self.ops.add_rms_norm(x, residual, self.weight, self.eps)
