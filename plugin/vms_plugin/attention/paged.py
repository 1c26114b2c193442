"""What paged attention needs to know about a step, built once on the host and shared by every layer.

The KV cache of a layer is two tensors of shape [num_kv_heads, slots, head_dim] (head-major): slot
`block_id * block_size + offset` is where vLLM's block tables say a token lives, so the block ids address the
cache directly and one KV head's rows are contiguous for the kernels in kernels/cpu_kernels.cc.
"""

from typing import NamedTuple

import mindspore as ms
from mindspore import Tensor

from vms_plugin.worker.batch import StepBatch


class AttentionInputs(NamedTuple):
    """T tokens of R requests; C context slots per request (the longest block table times block size)."""

    positions: ms.Tensor  # [T] int32: each token's position; it sees context positions 0..position
    slot_mapping: ms.Tensor  # [T] int32: the cache slot its K/V is written to
    token_requests: ms.Tensor  # [T] int32: which request (row of context_slots) it belongs to
    context_slots: ms.Tensor  # [R, C] int32: the cache slot of each context position of each request


def attention_inputs(batch: StepBatch) -> AttentionInputs:
    return AttentionInputs(
        Tensor(batch.positions), Tensor(batch.slot_mapping), Tensor(batch.token_requests), Tensor(batch.context_slots)
    )
