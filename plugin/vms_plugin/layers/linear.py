"""A bias-optional linear layer whose weight is in the device's layout and the model's storage type.

The checkpoint's weight is [out_features, in_features]; the loader hands it to `LayerOps.linear_weight`, which
lays it out for the device's matmul: packed 64-column panels on CPU, transposed on Ascend. Biases stay float32.
An int8 weight carries its per-channel scales inside that layout (layers/int8.py).
"""

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer

from vms_plugin.layers.precision import linear_dtype
from vms_plugin.ops import layer_ops

DEVICE_WEIGHT = "device_weight"  # parameter name; the checkpoint's tensor is `weight`, laid out for the device


def device_weight(in_features: int, out_features: int, dtype: str) -> Parameter:
    """An unfilled [out, in] weight in the device's layout, stored as `dtype`."""
    shape = layer_ops().linear_weight_shape(in_features, out_features, dtype)
    return Parameter(initializer("zeros", shape, linear_dtype(dtype)), name=DEVICE_WEIGHT)


class Linear(nn.Cell):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = False,
        dtype: str = "float32",
        int8_activations: bool = False,
    ) -> None:
        super().__init__()
        self.ops = layer_ops()
        self.out_features, self.int8_activations = out_features, int8_activations
        self.device_weight = device_weight(in_features, out_features, dtype)
        self.bias = Parameter(initializer("zeros", (out_features,), ms.float32), name="bias") if bias else None

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        return self.ops.linear(x, self.device_weight, self.bias, self.out_features, self.int8_activations)
