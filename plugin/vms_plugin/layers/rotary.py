"""Rotary position embedding (the rotate-half form used by Llama-family checkpoints in Hugging Face layout).

cos/sin are tabulated once for every position up to the model's maximum; a step looks its rows up once
(`RotaryEmbedding`) and every layer applies them (`apply_rotary`). rotate_half(x) = [-x2, x1] is computed as
swap(x) * [-1, 1]: the swap is one gather and the sign lives in the sin table, so a layer pays four ops
instead of seven (on CPU, PyNative costs tens of microseconds per op whatever its size).
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from vms_plugin.layers.rope_scaling import RopeParameters, inverse_frequencies


def rotary_tables(head_dim: int, max_positions: int, rope: RopeParameters) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [max_positions, head_dim], computed in float32 the way transformers does."""
    inv_freq, attention_factor = inverse_frequencies(head_dim, rope)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv_freq).astype(np.float32)
    angles = np.concatenate([freqs, freqs], axis=-1)
    scale = np.float32(attention_factor)
    return (np.cos(angles) * scale).astype(np.float32), (np.sin(angles) * scale).astype(np.float32)


def signed_sin(sin: np.ndarray) -> np.ndarray:
    """sin with its first half negated, so that x * cos + swap_halves(x) * signed_sin = HF's rotary."""
    half = sin.shape[-1] // 2
    return np.concatenate([-sin[..., :half], sin[..., half:]], axis=-1)


class RotaryEmbedding(nn.Cell):
    def __init__(self, head_dim: int, max_positions: int, rope: RopeParameters) -> None:
        super().__init__()
        cos, sin = rotary_tables(head_dim, max_positions, rope)
        self.cos = Tensor(cos)
        self.sin = Tensor(signed_sin(sin))
        half = head_dim // 2
        self.swap_halves = Tensor(np.concatenate([np.arange(half, head_dim), np.arange(half)]).astype(np.int32))

    def construct(self, positions: ms.Tensor, num_heads: int) -> tuple[ms.Tensor, ms.Tensor, ms.Tensor]:
        """cos and signed sin for each token and head, [T, heads, D], and the half-swap index.

        Expanded over heads once per step: every layer then multiplies same-shape tensors, which MindSpore's
        CPU kernels do ~5x faster than a broadcasting multiply.
        """
        per_head = ops.tile(positions.unsqueeze(1), (1, num_heads))
        return self.cos[per_head], self.sin[per_head], self.swap_halves


def apply_rotary(x: ms.Tensor, cos: ms.Tensor, signed_sin: ms.Tensor, swap_halves: ms.Tensor) -> ms.Tensor:
    """x [T, heads, D] rotated by each token's position."""
    return x * cos + ops.gather(x, swap_halves, 2) * signed_sin
