"""What paged attention needs to know about a step, built once on the host and shared by every layer.

The KV cache of a layer is two tensors of shape [num_kv_heads, slots, head_dim] (head-major): slot
`block_id * block_size + offset` is where vLLM's block tables say a token lives, so the block ids address the
cache directly and one KV head's rows are contiguous for the kernels in kernels/cpu_kernels.cc (whose K cache
holds each 16 slots as one transposed tile, ops/cpu.py).
"""

from typing import NamedTuple

import mindspore as ms
import numpy as np
from mindspore import Tensor

from vms_plugin.worker.batch import StepBatch


class AttentionInputs(NamedTuple):
    """T tokens of R requests; C context slots per request (the longest block table times block size).

    One int32 tensor, since a kernel launch costs ~5 us per input: R, C, then
      positions [T]: each token's position; it sees context positions 0..position,
      slot_mapping [T]: the cache slot its K/V is written to,
      token_requests [T]: which request (row of context_slots) it belongs to,
      context_slots [R, C]: the cache slot of each context position of each request,
      request_adapters [R]: each request's LoRA slot, -1 for none (layers/lora.py).
    """

    indices: ms.Tensor


def attention_inputs(batch: StepBatch) -> AttentionInputs:
    requests, context = batch.context_slots.shape
    header = np.array([requests, context], np.int32)
    parts = (
        header,
        batch.positions,
        batch.slot_mapping,
        batch.token_requests,
        batch.context_slots.reshape(-1),
        batch.adapter_slots,
    )
    return AttentionInputs(Tensor(np.concatenate([part.astype(np.int32, copy=False) for part in parts])))
