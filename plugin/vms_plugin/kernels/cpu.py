"""The C++ kernels of cpu_kernels.cc as MindSpore operators (Custom, func_type "aot").

Each wrapper states the shapes; cpu_kernels.cc documents the arithmetic. Operators are created on first use,
after the library is built, and shared by every layer.
"""

from collections.abc import Callable
from functools import cache
from pathlib import Path

import mindspore as ms
from mindspore import Parameter, ops

from vms_plugin.kernels.build import build_library


def _same_as_first(first, *_):
    return first


def _pair_like_first(first, *_):
    return first, first


def _rotated_queries_shape(qkv, cos, sin, positions, slots, k_cache, *_):
    kv_heads, _, head_dim = k_cache
    return [qkv[0], qkv[1] // head_dim - 2 * kv_heads, head_dim]


# kernel name -> (output shape, output dtype), each a function of the input shapes / dtypes.
_SIGNATURES: dict[str, tuple[Callable, Callable]] = {
    "RmsNorm": (_same_as_first, _same_as_first),
    "AddRmsNorm": (_pair_like_first, _pair_like_first),
    "Linear": (lambda x, weight, bias, options: [x[0], bias[0]], _same_as_first),
    "PackedRows": (lambda ids, weight, width: [ids[0], width[0]], lambda *_: ms.float32),
    "RopeCache": (_rotated_queries_shape, _same_as_first),
    "PagedAttention": (lambda q, *_: [q[0], q[1] * q[2]], _same_as_first),
    "DecoderLayer": (_pair_like_first, _pair_like_first),
    "CausalLm": (lambda ids, *rest: [rest[-2][0], rest[-1][0]], lambda *_: ms.float32),
    "CopySlots": (lambda *_: [1], lambda *_: ms.float32),
    "RoutedExperts": (_same_as_first, _same_as_first),
    "LatentAttention": (lambda q, kv, settings, w_uk, w_uv, *_: [q[0], w_uv[0] * w_uv[1]], _same_as_first),
    "CopyRows": (lambda *_: [1], lambda *_: ms.float32),
}


@cache
def kernel_operator(name: str, library: Path) -> ops.Custom:
    """Kernel `name` of a compiled library (tests also load builds made with other instruction sets)."""
    out_shape, out_dtype = _SIGNATURES[name]
    return ops.Custom(f"{library}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


def _operator(name: str) -> ops.Custom:
    return kernel_operator(name, build_library())


def rms_norm(x: ms.Tensor, weight: Parameter, eps: ms.Tensor) -> ms.Tensor:
    """x [N, D] normalised by its root mean square and scaled by weight [D]; eps is a [1] float32 tensor."""
    return _operator("RmsNorm")(x, weight, eps)


def add_rms_norm(x: ms.Tensor, residual: ms.Tensor, weight: Parameter, eps: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
    """(rms_norm(x + residual), x + residual): a layer's residual add fused into the next norm."""
    return _operator("AddRmsNorm")(x, residual, weight, eps)


def linear(x: ms.Tensor, packed_weight: Parameter, bias: ms.Tensor, options: ms.Tensor) -> ms.Tensor:
    """x [M, in] @ W^T + bias -> [M, out]; the weight packed by kernels/pack.py (float32, float16, bfloat16 or
    int8), bias [out] (zeros for none), options [1] float32: 1 quantizes x per row for an int8 weight (W8A8)."""
    return _operator("Linear")(x, packed_weight, bias, options)


def packed_rows(ids: ms.Tensor, packed_weight: Parameter, width: ms.Tensor) -> ms.Tensor:
    """Rows W[ids] [T, in] as float32 of a weight W [out, in] packed for `linear`; width is any [in] tensor.

    An embedding table stored this way serves both the lookup and, when tied, the output projection."""
    return _operator("PackedRows")(ids, packed_weight, width)


def rope_and_cache(
    qkv: ms.Tensor,
    cos: ms.Tensor,
    sin: ms.Tensor,
    positions: ms.Tensor,
    slots: ms.Tensor,
    k_cache: Parameter,
    v_cache: Parameter,
    qk_norm: tuple[ms.Tensor, ms.Tensor, ms.Tensor],
) -> ms.Tensor:
    """qkv [T, (H + 2K) * D] -> rotated q [T, H, D]; rotated k and v are written to the caches at `slots`.

    `qk_norm` = (q_norm weight [D], k_norm weight [D], eps [1]): with eps > 0 each q and k head is RMS-normalised
    first (Qwen3); eps 0 turns that off.
    """
    return _operator("RopeCache")(qkv, cos, sin, positions, slots, k_cache, v_cache, *qk_norm)


def paged_attention(
    q: ms.Tensor,
    k_cache: Parameter,
    v_cache: Parameter,
    positions: ms.Tensor,
    token_requests: ms.Tensor,
    context_slots: ms.Tensor,
    scale: ms.Tensor,
) -> ms.Tensor:
    """Causal attention of q [T, H, D] over each token's request context in the paged caches -> [T, H * D]."""
    return _operator("PagedAttention")(q, k_cache, v_cache, positions, token_requests, context_slots, scale)


def decoder_layer(*inputs: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
    """A decoder layer, or half of one, in one launch -> (output, residual stream); the 12 inputs in the order
    cpu_kernels.cc's DecoderLayer lists them (ops/cpu.py assembles them)."""
    return _operator("DecoderLayer")(*inputs)


def causal_lm(*inputs: ms.Tensor) -> ms.Tensor:
    """A whole model on one rank in one launch: token ids -> the logits [S, V] of the tokens at logits_index; the 16
    inputs in the order cpu_kernels.cc's CausalLm lists them (ops/cpu.py assembles them)."""
    return _operator("CausalLm")(*inputs)


def copy_slots(k_cache: Parameter, v_cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
    """Copy cache slots src[i] -> dst[i] for every KV head, in place."""
    _operator("CopySlots")(k_cache, v_cache, src, dst)


def routed_experts(
    x: ms.Tensor,
    router: Parameter,
    gate_up: Parameter,
    down: Parameter,
    settings: ms.Tensor,
    shared: tuple[Parameter, Parameter, Parameter],
) -> ms.Tensor:
    """A mixture-of-experts MLP: x [T, E] -> [T, E]; the router packed for `linear` (N = X), each expert's packed
    gate_up and down weights stacked on a first axis of X, settings float32 (ops/cpu.py's expert_settings: the
    routing, I, int8 activations, the shared expert's I (0: none) and whether it is gated, then any correction
    bias [X]); `shared`: its gate_up, down and gate weights packed for `linear` (any weights when there is none).
    See cpu_kernels.cc's RoutedExperts."""
    return _operator("RoutedExperts")(x, router, gate_up, down, settings, *shared)


def latent_attention(
    q: ms.Tensor,
    kv: ms.Tensor,
    settings: ms.Tensor,
    w_uk: ms.Tensor,
    w_uv: ms.Tensor,
    rotary: ms.Tensor,
    indices: ms.Tensor,
    cache: Parameter,
) -> ms.Tensor:
    """Multi-head latent attention: q [T, H * (Dn + R)], kv [T, L + R] (kv_a's output) -> [T, H * Dv], each token's
    latent row written to cache [S, L + R] first; settings float32 (ops/cpu.py's latent_settings), w_uk [H, Dn, L]
    and w_uv [H, Dv, L] float32, rotary [2, P, R], the step's indices (attention/paged.py). See cpu_kernels.cc's
    LatentAttention."""
    return _operator("LatentAttention")(q, kv, settings, w_uk, w_uv, rotary, indices, cache)


def copy_rows(cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
    """Copy rows src[i] -> dst[i] of a latent cache [S, W], in place."""
    _operator("CopyRows")(cache, src, dst)
