"""Paged attention from basic MindSpore ops (the CPU path; MindSpore's fused PagedAttention has no CPU kernel).

The KV cache of a layer is two tensors of shape [num_blocks * block_size, num_kv_heads, head_dim]: row
`block_id * block_size + offset` holds one token, so vLLM's block ids address it directly. A step first writes
its new K/V rows (slot_mapping), then every request gathers its context through its block table and attends
with a causal mask by position. All requests of the step are handled by one set of batched ops.
"""

from typing import NamedTuple

import mindspore as ms
from mindspore import Parameter, mint, ops


class AttentionInputs(NamedTuple):
    """The per-step index tensors, built once per step on the host (see worker/batch.py)."""

    slot_mapping: ms.Tensor  # [T]: cache row written by each new token
    context_slots: ms.Tensor  # [R, C]: cache rows of each request's context, C = blocks * block_size
    query_index: ms.Tensor  # [R, Q]: token index of each padded query slot (T = the zero row)
    score_bias: ms.Tensor  # [R, 1, 1, Q, C]: 0 for visible keys, a large negative number for the others
    unpad_index: ms.Tensor  # [T]: row of each token in the flattened [R * Q] padded output


def paged_attention(
    q: ms.Tensor,
    k: ms.Tensor,
    v: ms.Tensor,
    k_cache: Parameter,
    v_cache: Parameter,
    inputs: AttentionInputs,
    scale: float,
) -> ms.Tensor:
    """q [T, H, D], k and v [T, KVH, D] -> attention output [T, H * D]; writes k and v into the caches."""
    ops.scatter_update(k_cache, inputs.slot_mapping, k)
    ops.scatter_update(v_cache, inputs.slot_mapping, v)
    num_heads, head_dim = q.shape[1:]
    num_kv_heads = k.shape[1]
    group = num_heads // num_kv_heads
    num_reqs, max_query = inputs.query_index.shape
    context = inputs.context_slots.shape[1]

    keys = k_cache[inputs.context_slots].transpose(0, 2, 3, 1)  # [R, KVH, D, C]
    values = v_cache[inputs.context_slots].transpose(0, 2, 1, 3)  # [R, KVH, C, D]
    padded = mint.cat([q, mint.zeros((1, num_heads, head_dim), dtype=q.dtype)])[inputs.query_index]
    # Heads sharing a KV head are stacked on the query axis so one batched matmul serves the whole group.
    queries = padded.reshape(num_reqs, max_query, num_kv_heads, group, head_dim).transpose(0, 2, 3, 1, 4)
    queries = queries.reshape(num_reqs, num_kv_heads, group * max_query, head_dim)

    scores = mint.matmul(queries, keys) * scale
    scores = scores.reshape(num_reqs, num_kv_heads, group, max_query, context) + inputs.score_bias
    probs = mint.softmax(scores, dim=-1).reshape(num_reqs, num_kv_heads, group * max_query, context)

    out = mint.matmul(probs, values).reshape(num_reqs, num_kv_heads, group, max_query, head_dim)
    out = out.transpose(0, 3, 1, 2, 4).reshape(num_reqs * max_query, num_heads * head_dim)
    return out[inputs.unpad_index]
