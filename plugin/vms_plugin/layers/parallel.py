"""Tensor parallelism (Megatron style): what each rank holds, and the collectives that join the ranks' parts.

A model split over N ranks keeps, on each rank, 1/N of the query heads, of the KV heads (or one of them, shared
by N/K ranks, when there are fewer KV heads K than ranks, as vLLM does), of the MLP's intermediate features and
of the vocabulary. q/k/v and gate/up are column-parallel (a rank computes its slice of their outputs), o and down
row-parallel (a rank multiplies its slice of their inputs and an all-reduce sums the partial products), the
embedding and the output projection vocab-parallel (a rank looks up or scores its slice of the vocabulary).

The collectives are behind `TensorParallelGroup`: vLLM's process group on CPU (worker/tensor_parallel_group.py),
HCCL on Ascend (`HcclGroup`), the identity for one rank (`SingleRank`).
"""

from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import mindspore as ms
import numpy as np
from mindspore import mint


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
    """vLLM's tensor-parallel ranks on Ascend, one worker process per NPU, joined by MindSpore's HCCL process group
    (mindspore.mint.distributed, torch.distributed's interface): rank `rank` of `world_size`, meeting at
    `init_method` (tcp://host:port, a port of its own beside vLLM's). `distributed` stands in for that module in
    tests."""

    def __init__(self, rank: int, world_size: int, init_method: str, distributed: Any = None) -> None:
        if distributed is None:
            from mindspore.mint import distributed
        self._distributed = distributed
        distributed.init_process_group(backend="hccl", init_method=init_method, world_size=world_size, rank=rank)
        self.rank, self.world_size = rank, world_size

    def all_reduce(self, x: ms.Tensor) -> ms.Tensor:
        self._distributed.all_reduce(x)  # in place, summed
        return x

    def all_gather(self, x: ms.Tensor) -> ms.Tensor:
        # HCCL gathers along axis 0: the last axis is moved there and back.
        rows = x.swapaxes(0, -1).contiguous()
        gathered = mint.empty((self.world_size * rows.shape[0], *rows.shape[1:]), dtype=rows.dtype)
        self._distributed.all_gather_into_tensor(gathered, rows)
        return gathered.swapaxes(0, -1)


class Part(NamedTuple):
    """Rows (axis 0) or columns (axis 1) [start, stop) of a checkpoint tensor; indices at or past the tensor's end
    read as zeros (a vocabulary padded to split evenly, a bias that only rank 0 adds)."""

    axis: int
    start: int
    stop: int

    def of(self, array: np.ndarray) -> np.ndarray:
        """This part of `array` (a view where nothing is padded)."""
        size = array.shape[self.axis]
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(min(self.start, size), min(self.stop, size))
        piece = array[tuple(index)]
        missing = self.stop - self.start - piece.shape[self.axis]
        if not missing:
            return piece
        padding = [(0, 0)] * array.ndim
        padding[self.axis] = (0, missing)
        return np.pad(piece, padding)


@dataclass(frozen=True)
class Partition:
    """This rank's share of a model with `heads` query heads, `kv_heads` KV heads of `head_dim`, `intermediate`
    MLP features and `vocab` tokens, and of its routed experts if it has any (layers/experts.py's ExpertShare)."""

    rank: int
    world_size: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    experts: Any = None

    def __post_init__(self) -> None:
        n = self.world_size
        problems = []
        if self.heads % n:
            problems.append(f"{self.heads} attention heads")
        if self.kv_heads % n and n % self.kv_heads:
            problems.append(f"{self.kv_heads} KV heads (nor does {n} split over them)")
        if self.intermediate % n:
            problems.append(f"intermediate size {self.intermediate}")
        if problems:
            raise ValueError(
                f"--tensor-parallel-size {n} does not divide the model's {' or '.join(problems)}; "
                f"choose a size that divides its {self.heads} attention and {self.kv_heads} KV heads"
            )

    @property
    def local_heads(self) -> int:
        return self.heads // self.world_size

    @property
    def local_kv_heads(self) -> int:
        return max(self.kv_heads // self.world_size, 1)

    @property
    def local_intermediate(self) -> int:
        return self.intermediate // self.world_size

    @property
    def local_vocab(self) -> int:
        """Rows of the vocabulary per rank, the last rank's padded with zeros."""
        return -(-self.vocab // self.world_size)

    @property
    def first_token(self) -> int:
        return self.rank * self.local_vocab

    def query_rows(self) -> Part:
        size = self.local_heads * self.head_dim
        return Part(0, self.rank * size, (self.rank + 1) * size)

    def kv_rows(self) -> Part:
        """Rows of k_proj / v_proj: this rank's KV heads, or the one it shares with the ranks beside it."""
        first_head = self.rank * self.kv_heads // self.world_size
        return Part(0, first_head * self.head_dim, (first_head + self.local_kv_heads) * self.head_dim)

    def intermediate_rows(self) -> Part:
        size = self.local_intermediate
        return Part(0, self.rank * size, (self.rank + 1) * size)

    def vocab_rows(self) -> Part:
        return Part(0, self.first_token, self.first_token + self.local_vocab)

    def columns(self, rows: Part) -> Part:
        """The inputs of a row-parallel layer that match a column-parallel layer's `rows` of outputs."""
        return Part(1, rows.start, rows.stop)

    def once(self, size: int) -> Part:
        """A bias added after an all-reduce: rank 0 holds it, the others zeros, so that the sum adds it once."""
        return Part(0, 0, size) if self.rank == 0 else Part(0, size, 2 * size)
