"""Tensor-parallel layers (Megatron style) for the Ascend path, with the collective behind a small interface.

Column-parallel: each rank holds a slice of the output features; row-parallel: a slice of the input features,
its partial product summed across ranks by an all-reduce; vocab-parallel embedding: a slice of the vocabulary,
out-of-range ids give zero rows and the all-reduce fills them in. On Ascend the collectives are MindSpore's HCCL
operators (`HcclGroup`); tests run several ranks in one process with a group that sums in memory.
"""

from typing import Protocol

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, mint, nn, ops


class TensorParallelGroup(Protocol):
    rank: int
    world_size: int

    def all_reduce(self, x: ms.Tensor) -> ms.Tensor:
        """Elementwise sum of `x` over the ranks."""

    def all_gather(self, x: ms.Tensor) -> ms.Tensor:
        """The ranks' `x` concatenated along the last axis, in rank order."""


class SingleRank:
    """World size 1: every collective is the identity."""

    rank, world_size = 0, 1

    def all_reduce(self, x: ms.Tensor) -> ms.Tensor:
        return x

    def all_gather(self, x: ms.Tensor) -> ms.Tensor:
        return x


class HcclGroup:
    """The world group over HCCL, as vLLM's multiprocessing executor starts one worker per NPU."""

    def __init__(self) -> None:
        from mindspore.communication import GlobalComm, get_group_size, get_rank, init

        init("hccl")
        self.rank, self.world_size = get_rank(), get_group_size()
        self._all_reduce = ops.AllReduce(ops.ReduceOp.SUM, GlobalComm.WORLD_COMM_GROUP)
        self._all_gather = ops.AllGather(GlobalComm.WORLD_COMM_GROUP)  # gathers along axis 0

    def all_reduce(self, x: ms.Tensor) -> ms.Tensor:
        return self._all_reduce(x)

    def all_gather(self, x: ms.Tensor) -> ms.Tensor:
        gathered = self._all_gather(x.swapaxes(0, -1))
        return gathered.swapaxes(0, -1)


def shard(array: np.ndarray, group: TensorParallelGroup, axis: int) -> np.ndarray:
    """This rank's contiguous slice of `array` along `axis` (the size must divide evenly)."""
    size = array.shape[axis]
    if size % group.world_size:
        raise ValueError(f"dimension of size {size} does not split over {group.world_size} ranks")
    step = size // group.world_size
    return np.take(array, range(group.rank * step, (group.rank + 1) * step), axis=axis)


class ColumnParallelLinear(nn.Cell):
    """y = x W^T with W's output rows split over ranks; each rank returns its slice (or all, gathered)."""

    def __init__(self, weight: np.ndarray, group: TensorParallelGroup, gather_output: bool = False) -> None:
        super().__init__()
        self.group, self.gather_output = group, gather_output
        self.weight_t = Parameter(Tensor(np.ascontiguousarray(shard(weight, group, 0).T)), name="weight_t")

    def construct(self, x: ms.Tensor) -> ms.Tensor:
        y = mint.matmul(x, self.weight_t)
        return self.group.all_gather(y) if self.gather_output else y


class RowParallelLinear(nn.Cell):
    """y = x W^T with W's input columns split over ranks: x arrives split the same way (a column-parallel
    layer's output), each rank multiplies its part and the all-reduce sums them; the bias is added once, after."""

    def __init__(self, weight: np.ndarray, group: TensorParallelGroup, bias: np.ndarray | None = None) -> None:
        super().__init__()
        self.group = group
        self.weight_t = Parameter(Tensor(np.ascontiguousarray(shard(weight, group, 1).T)), name="weight_t")
        self.bias = None if bias is None else Parameter(Tensor(bias), name="bias")

    def construct(self, x_shard: ms.Tensor) -> ms.Tensor:
        y = self.group.all_reduce(mint.matmul(x_shard, self.weight_t))
        return y if self.bias is None else y + self.bias


class VocabParallelEmbedding(nn.Cell):
    """Rows [rank * V/n, (rank + 1) * V/n) of the table; ids outside them look up zeros, the all-reduce sums."""

    def __init__(self, table: np.ndarray, group: TensorParallelGroup) -> None:
        super().__init__()
        self.group = group
        rows = shard(table, group, 0)
        self.start, self.end = group.rank * len(rows), (group.rank + 1) * len(rows)
        self.weight = Parameter(Tensor(rows), name="weight")

    def construct(self, ids: ms.Tensor) -> ms.Tensor:
        inside = mint.logical_and(ids >= self.start, ids < self.end)
        local = (ids - self.start) * inside.astype(ids.dtype)  # out-of-range ids read row 0, then zeroed
        rows = self.weight[local] * inside.unsqueeze(-1).astype(self.weight.dtype)
        return self.group.all_reduce(rows)
