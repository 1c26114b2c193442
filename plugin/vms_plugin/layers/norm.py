"""RMSNorm from basic ops (MindSpore's fused RmsNorm has no CPU kernel).

When a norm feeds only a linear layer, its per-feature weight can be folded into that layer's weight rows
(`fold_into`): one broadcasting multiply less per norm, the slowest op of the norm on CPU.
"""

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops

from vms_plugin.layers.linear import Linear


class RMSNorm(nn.Cell):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = Parameter(ops.ones((size,), ms.float32), name="weight")
        self.eps = Tensor(eps, ms.float32)  # a Python float would be a float64 scalar in graph mode
        self.weight_folded = False

    def fold_into(self, linear: Linear) -> None:
        """Scale `linear`'s input rows by this norm's weight, (x * w) @ W = x @ (w[:, None] * W), once."""
        weight = self.weight.asnumpy()
        linear.weight_t.set_data(Tensor(linear.weight_t.asnumpy() * weight[:, None]))
        self.weight_folded = True

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        normed = x * mint.rsqrt(mint.mean(mint.square(x), -1, keepdim=True) + self.eps)
        return normed if self.weight_folded else normed * self.weight
