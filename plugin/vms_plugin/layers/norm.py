"""RMSNorm from basic ops (MindSpore's fused RmsNorm has no CPU kernel)."""

import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops


class RMSNorm(nn.Cell):
    def __init__(self, size: int, eps: float) -> None:
        super().__init__()
        self.weight = Parameter(ops.ones((size,), ms.float32), name="weight")
        self.eps = Tensor(eps, ms.float32)  # a Python float would be a float64 scalar in graph mode

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        variance = mint.mean(mint.square(x), -1, keepdim=True)
        return x * mint.rsqrt(variance + self.eps) * self.weight
