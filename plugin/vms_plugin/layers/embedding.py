"""Token embedding: a [vocab, hidden] table looked up by id, held as a linear weight (layers/linear.py).

In the linear layout the same parameter is also the output projection of a model with tied embeddings, so the
table is kept once (113 MB of float32 for the default model's 49,152 x 576).
"""

import mindspore as ms
from mindspore import nn

from vms_plugin.layers.linear import device_weight
from vms_plugin.ops import layer_ops


class Embedding(nn.Cell):
    """Rows `first_token` onwards of the vocabulary (a tensor-parallel rank's part, layers/parallel.py): the ids of
    other ranks' tokens look up zeros, which the ranks' all-reduce fills in."""

    def __init__(self, vocab_size: int, hidden_size: int, dtype: str = "float32", first_token: int = 0) -> None:
        super().__init__()
        self.ops = layer_ops()
        self.hidden_size, self.first_token = hidden_size, first_token
        self.device_weight = device_weight(hidden_size, vocab_size, dtype)

    def construct(self, ids: ms.Tensor) -> ms.Tensor:
        """Rows [T, hidden] as float32."""
        local_ids = ids - self.first_token if self.first_token else ids
        return self.ops.embedding(local_ids, self.device_weight, self.hidden_size)
