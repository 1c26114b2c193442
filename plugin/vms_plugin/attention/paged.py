"""Paged attention from basic MindSpore ops (the CPU path; MindSpore's fused PagedAttention has no CPU kernel).

The KV cache of a layer is two tensors of shape [num_kv_heads * slots, head_dim], head-major: row
`kv_head * slots + block_id * block_size + offset` holds one head of one token, so vLLM's block ids address it
directly. The layout is chosen so that the whole step is gathers and batched matmuls with no transpose:
MindSpore's CPU transpose costs ~1 ms per layer at decode sizes, more than the attention maths. Every
rearrangement (new K/V rows into the cache, context rows out of it, queries grouped by KV head, outputs back
to token order) is a gather or scatter through row indices the host computed once per step
(`paged_inputs.py`).
"""

from typing import NamedTuple

import mindspore as ms
from mindspore import Parameter, mint, ops


class AttentionInputs(NamedTuple):
    """The per-step row indices and mask, built once per step on the host and shared by every layer.

    T tokens, R requests, Q longest query, C context slots per request, H heads, KVH KV heads, G = H / KVH.
    """

    write_rows: ms.Tensor  # [T, KVH]: cache row of each new token's K/V, per KV head
    context_rows: ms.Tensor  # [KVH, R, C]: cache rows of each request's context, per KV head
    query_rows: ms.Tensor  # [KVH, R, G * Q]: row of q.reshape(T * H, D) for each (group head, query slot)
    score_bias: ms.Tensor  # [KVH or 1, R, G or 1, Q, C]: 0 for visible keys, a large negative number for the others
    output_rows: ms.Tensor  # [T * H]: row of the flattened [KVH * R * G * Q] output for each (token, head)


_scores_matmul = ops.BatchMatMul(transpose_b=True)
_values_matmul = ops.BatchMatMul()


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
    ops.scatter_update(k_cache, inputs.write_rows, k)
    ops.scatter_update(v_cache, inputs.write_rows, v)
    num_tokens, num_heads, head_dim = q.shape
    num_kv_heads, num_reqs, group_queries = inputs.query_rows.shape
    max_query, context = inputs.score_bias.shape[3:]

    keys = ops.gather(k_cache, inputs.context_rows, 0)  # [KVH, R, C, D]
    values = ops.gather(v_cache, inputs.context_rows, 0)
    # Heads sharing a KV head are stacked on the query axis, so one batched matmul serves the whole group.
    queries = ops.gather(q.reshape(num_tokens * num_heads, head_dim), inputs.query_rows, 0)  # [KVH, R, G*Q, D]

    scores = _scores_matmul(queries, keys) * scale
    scores = scores.reshape(num_kv_heads, num_reqs, group_queries // max_query, max_query, context)
    probs = mint.softmax(scores + inputs.score_bias, dim=-1).reshape(num_kv_heads, num_reqs, group_queries, context)
    out = _values_matmul(probs, values).reshape(-1, head_dim)  # [KVH * R * G * Q, D]
    return ops.gather(out, inputs.output_rows, 0).reshape(num_tokens, num_heads * head_dim)
