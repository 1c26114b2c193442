"""MindSpore and torch tensors seen as each other through DLPack: the same memory, no copy.

torch is where vms meets vLLM (the sampler, the process groups); the model stays MindSpore.
"""

import mindspore as ms
import torch
from mindspore.utils.dlpack import from_dlpack, to_dlpack


def to_torch(tensor: ms.Tensor) -> torch.Tensor:
    """The same memory seen as a torch tensor (torch does not accept MindSpore's __dlpack__, hence the capsule)."""
    return torch.utils.dlpack.from_dlpack(to_dlpack(tensor))


def to_mindspore(tensor: torch.Tensor) -> ms.Tensor:
    return from_dlpack(torch.utils.dlpack.to_dlpack(tensor))
