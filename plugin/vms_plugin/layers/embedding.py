"""Token embedding: a [vocab, hidden] table looked up by id (also the tied output projection of some models)."""

import mindspore as ms
from mindspore import Parameter, nn
from mindspore.common.initializer import initializer


class Embedding(nn.Cell):
    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = Parameter(initializer("zeros", (vocab_size, hidden_size), ms.float32), name="weight")

    def construct(self, ids: ms.Tensor) -> ms.Tensor:
        return self.weight[ids]
