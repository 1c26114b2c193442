"""Row indices for paged attention (see paged.py), computed with numpy from a step's batch and the head layout.

Pure index arithmetic on the host, once per step; every layer of the model then reuses the same tensors.
"""

from dataclasses import dataclass

import numpy as np
from mindspore import Tensor

from vms_plugin.attention.paged import AttentionInputs
from vms_plugin.worker.batch import StepBatch

# Up to this many elements (16 MB) the mask is expanded to the full score shape on the host; beyond it (long
# prefills) it stays broadcast, trading speed for memory.
MATERIALIZED_BIAS_LIMIT = 4 << 20


@dataclass(frozen=True)
class HeadLayout:
    num_heads: int
    num_kv_heads: int
    slots_per_head: int  # rows of the KV cache given to each KV head: num_blocks * block_size

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads

    def head_rows(self, slots: np.ndarray) -> np.ndarray:
        """Cache rows of token `slots` for every KV head: shape slots.shape + [KVH] (the head-major layout)."""
        return slots[..., None] + np.arange(self.num_kv_heads, dtype=np.int64) * self.slots_per_head


def attention_inputs(batch: StepBatch, layout: HeadLayout) -> AttentionInputs:
    return AttentionInputs(*(Tensor(array) for array in attention_index_arrays(batch, layout)))


def attention_index_arrays(batch: StepBatch, layout: HeadLayout) -> tuple[np.ndarray, ...]:
    """write_rows, context_rows, query_rows, score_bias, output_rows as AttentionInputs describes them."""
    num_tokens = len(batch.input_ids)
    num_reqs, max_query = batch.query_index.shape
    heads, kv_heads, group = layout.num_heads, layout.num_kv_heads, layout.group
    write_rows = layout.head_rows(batch.slot_mapping)  # [T, KVH]
    context_rows = np.moveaxis(layout.head_rows(batch.context_slots), -1, 0)  # [KVH, R, C]

    # Padding query slots (index T) read token 0: their outputs are never gathered back.
    query_token = np.where(batch.query_index == num_tokens, 0, batch.query_index)
    head_of = np.arange(kv_heads)[:, None] * group + np.arange(group)[None, :]  # [KVH, G]
    query_rows = query_token[None, :, None, :] * heads + head_of[:, None, :, None]  # [KVH, R, G, Q]

    # Token t of request r at query slot s, head h = kvh * G + g, sits at ((kvh * R + r) * G + g) * Q + s.
    request_and_slot = batch.unpad_index  # r * Q + s for each token
    request, slot = np.divmod(request_and_slot, max_query)
    kv_head, in_group = np.divmod(np.arange(heads), group)
    output_rows = ((kv_head[None, :] * num_reqs + request[:, None]) * group + in_group[None, :]) * max_query
    output_rows = output_rows + slot[:, None]

    score_bias = batch.score_bias.reshape(1, num_reqs, 1, max_query, -1)
    full_shape = (kv_heads, num_reqs, group, max_query, score_bias.shape[-1])
    if np.prod(full_shape) <= MATERIALIZED_BIAS_LIMIT:  # a same-shape add is ~9x faster than a broadcast one
        score_bias = np.ascontiguousarray(np.broadcast_to(score_bias, full_shape))
    return (
        write_rows.astype(np.int32),
        context_rows.astype(np.int32),
        query_rows.reshape(kv_heads, num_reqs, group * max_query).astype(np.int32),
        score_bias,
        output_rows.reshape(-1).astype(np.int32),
    )
