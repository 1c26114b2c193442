"""Multi-head latent attention (DeepSeek's MLA) on Ascend: the composition vllm-mindspore's DeepSeek runs.

The cache is [blocks, block_size, 1, L + R], one latent row per token (its normalised compressed KV, then its
rotated key part), written by ReshapeAndCache with no value cache. A decode-only step attends with the absorbed
projections: each head's query becomes [q_nope @ W_UK, rotated q_rope] (a batched matmul), PagedAttention with
`mla_v_dim` L reads the latent rows as keys and their first L values as values, and the weighted latents times
W_UV^T give each head's output. A step with any prefill decompresses each request's cached context into per-head
keys [k_nope, k_rope] and values (kv_b's rows) and runs FlashAttentionScore over them in the TND layout, as the
dense layers' prefill does; FlashAttentionScore takes one head size, so the values are padded with zeros to the
keys' and the output cut back. DeepSeek's interleaved RoPE pairs are de-interleaved (evens, then odds) before the
rotate-half ApplyRotaryPosEmb: queries and keys share the permutation, so scores are those of the pairs.
Not run on an NPU: tests/unit/test_ascend_ops.py runs it through stand-ins of the primitives' documented semantics.
"""

from typing import Any

import mindspore as ms
from mindspore import Tensor, mint

from vms_plugin.ops.interface import LatentWeights


def latent_cache_shape(num_slots: int, block_size: int, width: int) -> tuple[int, ...]:
    return (num_slots // block_size, block_size, 1, width)


def absorbed_projections(weights: LatentWeights) -> tuple[Tensor, Tensor]:
    """(W_UK [H, Dn, L], W_UV [H, Dv, L]) float32 out of kv_b, made once on the layer's first step."""
    if "absorbed" not in weights.prepared:
        w_uk, w_uv = weights.absorbed_projections()
        weights.prepared["absorbed"] = Tensor(w_uk), Tensor(w_uv)
    return weights.prepared["absorbed"]


def latent_attention(ops: Any, weights: LatentWeights, x: ms.Tensor, rotary: Any, inputs: Any) -> ms.Tensor:
    """ops/interface.py's latent_attention on `ops` (an AscendOps: its matmul, norms, rotary and kernels)."""
    w, s = weights, weights.shape
    int8 = w.int8_activations
    if w.q_a is None:
        q = ops.linear(x, w.q, None, 0, int8)
    else:
        q = ops.linear(ops.rms_norm(ops.linear(x, w.q_a, None, 0, int8), w.q_a_norm, w.eps), w.q, None, 0, int8)
    kv = ops.linear(x, w.kv_a, None, 0, int8)
    latent = ops.rms_norm(kv[:, : s.latent], w.kv_a_norm, w.eps)
    q = q.reshape(-1, s.heads, s.nope + s.rope)
    q_nope, q_rope = q[..., : s.nope], q[..., s.nope :]
    if w.interleaved:
        q_rope, k_rope = _deinterleaved(q_rope), _deinterleaved(kv[:, None, s.latent :])
    else:
        k_rope = kv[:, None, s.latent :]
    q_rope, k_rope = ops._rotary(
        q_rope.reshape(-1, s.heads * s.rope), k_rope.reshape(-1, s.rope), *rotary, inputs.positions
    )
    rows = mint.cat([latent, k_rope], dim=-1)
    ops._reshape_and_cache(rows.astype(w.cache.dtype), None, w.cache, None, inputs.slot_mapping)
    w_uk, w_uv = absorbed_projections(w)
    q_rope = q_rope.reshape(-1, s.heads, s.rope)
    if inputs.decode_only:
        out = _absorbed_decode(ops, w, q_nope, q_rope, w_uk, w_uv, inputs)
    else:
        out = _decompressed_prefill(ops, w, q_nope, q_rope, w_uk, w_uv, inputs)
    return ops.linear(out.reshape(-1, s.heads * s.value), w.o, None, 0, int8)


def _deinterleaved(x: ms.Tensor) -> ms.Tensor:
    """[..., R] pairs (x0, x1), (x2, x3), ... -> [x0, x2, ..., x1, x3, ...]: rotate-half's layout of the pairs."""
    return mint.cat([x[..., 0::2], x[..., 1::2]], dim=-1)


def _absorbed_decode(ops, w: LatentWeights, q_nope, q_rope, w_uk, w_uv, inputs) -> ms.Tensor:
    """One token per request: attention on the latents, [T, H, Dv]."""
    s = w.shape
    q_latent = mint.bmm(q_nope.astype(ms.float32).transpose(1, 0, 2), w_uk).transpose(1, 0, 2)  # [T, H, L]
    query = mint.cat([q_latent, q_rope.astype(ms.float32)], dim=-1).reshape(-1, s.heads * (s.latent + s.rope))
    kernel = ops._kernel("paged-latent", ops.p.paged_attention, s.heads, w.scale, 1, mla_v_dim=s.latent)
    cache = w.cache
    summed = kernel(query.astype(cache.dtype), cache, cache, inputs.block_tables, inputs.seq_lens)
    summed = summed.astype(ms.float32).reshape(-1, s.heads, s.latent)
    return mint.bmm(summed.transpose(1, 0, 2), w_uv.transpose(0, 2, 1)).transpose(1, 0, 2)  # [T, H, Dv]


def _decompressed_prefill(ops, w: LatentWeights, q_nope, q_rope, w_uk, w_uv, inputs) -> ms.Tensor:
    """Steps with prompts: every request's context decompressed into per-head keys and values, [T, H, Dv]."""
    s = w.shape
    rows = w.cache.reshape(-1, s.latent + s.rope)[inputs.context_slots].astype(ms.float32)  # [S, L + R]
    latent, k_rope = rows[:, : s.latent], rows[:, s.latent :]
    k_nope = mint.matmul(latent, w_uk.reshape(-1, s.latent).T).reshape(-1, s.heads, s.nope)
    values = mint.matmul(latent, w_uv.reshape(-1, s.latent).T).reshape(-1, s.heads, s.value)
    k_rope = k_rope[:, None, :].broadcast_to((k_rope.shape[0], s.heads, s.rope))
    keys = mint.cat([k_nope, k_rope], dim=-1)
    query = mint.cat([q_nope.astype(ms.float32), q_rope.astype(ms.float32)], dim=-1)
    width = max(s.nope + s.rope, s.value)  # one head size for FlashAttentionScore: zeros pad the narrower
    query, keys, values = (_padded(t, width) for t in (query, keys, values))
    kernel = ops._kernel(
        "flash", ops.p.flash_attention_score, s.heads, scale_value=w.scale, input_layout="TND", sparse_mode=3
    )
    dtype = w.cache.dtype
    out = kernel(
        query.astype(dtype),
        keys.astype(dtype),
        values.astype(dtype),
        attn_mask=ops._causal_mask,
        actual_seq_qlen=inputs.actual_seq_qlen,
        actual_seq_kvlen=inputs.actual_seq_kvlen,
    )[3]
    return out.astype(ms.float32)[..., : s.value]


def _padded(x: ms.Tensor, width: int) -> ms.Tensor:
    missing = width - x.shape[-1]
    return x if missing == 0 else mint.cat([x, mint.zeros((*x.shape[:-1], missing), dtype=x.dtype)], dim=-1)
