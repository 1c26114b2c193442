"""A bias-optional linear layer whose weight is in the device's layout (see ops/interface.py).

The checkpoint's weight is [out_features, in_features]; the loader hands it to `LayerOps.linear_weight`, which
lays it out for the device's matmul: packed 64-column panels on CPU, transposed on Ascend.
"""

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from vms_plugin.ops import layer_ops

DEVICE_WEIGHT = "device_weight"  # parameter name; the checkpoint's tensor is `weight`, laid out for the device


class Linear(nn.Cell):
    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.ops = layer_ops()
        self.out_features = out_features
        shape = self.ops.linear_weight_shape(in_features, out_features)
        self.device_weight = Parameter(initializer("zeros", shape, ms.float32), name=DEVICE_WEIGHT)
        self.bias = Parameter(initializer("zeros", (out_features,), ms.float32), name="bias") if bias else None

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.ops.linear(x, self.device_weight, self.bias, self.out_features)
