"""The model's tensor-parallel collectives (layers/parallel.py) over vLLM's own process group for this rank.

vLLM's multiprocessing (or Ray) executor starts one worker per rank and joins them in its groups; on CPU the
tensor-parallel group's communicator reduces through shared memory. MindSpore tensors are handed to it as torch
tensors over the same memory.
"""

import mindspore as ms
from vllm.distributed import get_tp_group

from vms_plugin.worker.tensor_exchange import to_mindspore, to_torch


class VllmTensorParallelGroup:
    def __init__(self) -> None:
        self._group = get_tp_group()
        self.rank, self.world_size = self._group.rank_in_group, self._group.world_size

    def all_reduce(self, x: ms.Tensor) -> ms.Tensor:
        return to_mindspore(self._group.all_reduce(to_torch(x)))

    def all_gather(self, x: ms.Tensor) -> ms.Tensor:
        return to_mindspore(self._group.all_gather(to_torch(x), dim=-1))
