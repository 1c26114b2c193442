"""A bias-optional linear layer holding its weight transposed, [in_features, out_features].

MindSpore's CPU MatMul with `transpose_b` is 2-5x slower than a plain matmul on a pre-transposed weight at
batch sizes of 32-64 rows (measured in bench/README.md), so the loader transposes Hugging Face's
[out_features, in_features] once, at load time, into `weight_t`.
"""

import mindspore as ms
from mindspore import Parameter, mint, nn, ops

TRANSPOSED_WEIGHT = "weight_t"  # parameter name; the checkpoint's tensor is `weight`, transposed


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight_t = Parameter(ops.zeros((in_features, out_features), ms.float32), name=TRANSPOSED_WEIGHT)
        self.bias = Parameter(ops.zeros((out_features,), ms.float32), name="bias") if bias else None

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        y = mint.matmul(x, self.weight_t)
        if self.bias is not None:
            y = y + self.bias
        return y
