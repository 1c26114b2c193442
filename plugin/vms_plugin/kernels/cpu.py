"""The C++ kernels of cpu_kernels.cc as MindSpore operators (Custom, func_type "aot"), one per fused step.

Each wrapper states the shapes; cpu_kernels.cc documents the arithmetic. Operators are created on first use,
after the library is built, and shared by every layer.
"""

from collections.abc import Callable
from functools import cache

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
    "RopeCache": (_rotated_queries_shape, _same_as_first),
    "QkNormRopeCache": (_rotated_queries_shape, _same_as_first),
    "PagedAttention": (lambda q, *_: [q[0], q[1] * q[2]], _same_as_first),
    "SiluMul": (lambda gate_up: [gate_up[0], gate_up[1] // 2], _same_as_first),
    "CopySlots": (lambda *_: [1], lambda *_: ms.float32),
}


@cache
def _operator(name: str) -> ops.Custom:
    out_shape, out_dtype = _SIGNATURES[name]
    return ops.Custom(f"{build_library()}:{name}", out_shape=out_shape, out_dtype=out_dtype, func_type="aot")


def rms_norm(x: ms.Tensor, weight: Parameter, eps: ms.Tensor) -> ms.Tensor:
    """x [N, D] normalised by its root mean square and scaled by weight [D]; eps is a [1] float32 tensor."""
    return _operator("RmsNorm")(x, weight, eps)


def add_rms_norm(x: ms.Tensor, residual: ms.Tensor, weight: Parameter, eps: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
    """(rms_norm(x + residual), x + residual): a layer's residual add fused into the next norm."""
    return _operator("AddRmsNorm")(x, residual, weight, eps)


def rope_and_cache(
    qkv: ms.Tensor,
    cos: ms.Tensor,
    sin: ms.Tensor,
    positions: ms.Tensor,
    slots: ms.Tensor,
    k_cache: Parameter,
    v_cache: Parameter,
    qk_norm: tuple[Parameter, Parameter, ms.Tensor] | None = None,
) -> ms.Tensor:
    """qkv [T, (H + 2K) * D] -> rotated q [T, H, D]; rotated k and v are written to the caches at `slots`.

    With `qk_norm` = (q_norm weight, k_norm weight, eps), each q and k head is RMS-normalised first (Qwen3).
    """
    if qk_norm is None:
        return _operator("RopeCache")(qkv, cos, sin, positions, slots, k_cache, v_cache)
    return _operator("QkNormRopeCache")(qkv, cos, sin, positions, slots, k_cache, v_cache, *qk_norm)


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


def silu_mul(gate_up: ms.Tensor) -> ms.Tensor:
    """gate_up [N, 2I] -> silu(gate) * up, [N, I]."""
    return _operator("SiluMul")(gate_up)


def copy_slots(k_cache: Parameter, v_cache: Parameter, src: ms.Tensor, dst: ms.Tensor) -> None:
    """Copy cache slots src[i] -> dst[i] for every KV head, in place."""
    _operator("CopySlots")(k_cache, v_cache, src, dst)
