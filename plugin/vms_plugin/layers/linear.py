"""A bias-optional linear layer whose weight keeps Hugging Face's [out_features, in_features] layout."""

import mindspore as ms
from mindspore import Parameter, nn, ops


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.weight = Parameter(ops.zeros((out_features, in_features), ms.float32), name="weight")
        self.bias = Parameter(ops.zeros((out_features,), ms.float32), name="bias") if bias else None
        # transpose_b reads the weight as stored: no transposed copy per call.
        self.matmul = ops.MatMul(transpose_b=True)

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        y = self.matmul(x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y
