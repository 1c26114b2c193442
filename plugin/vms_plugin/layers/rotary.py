"""Rotary position embedding (the rotate-half form used by Llama-family checkpoints in Hugging Face layout).

cos/sin are tabulated once for every position up to the model's maximum; a step looks its rows up once
(`RotaryEmbedding`) and every layer applies them (`apply_rotary`).
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn

from vms_plugin.layers.rope_scaling import RopeParameters, inverse_frequencies


def rotary_tables(head_dim: int, max_positions: int, rope: RopeParameters) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [max_positions, head_dim], computed in float32 the way transformers does."""
    inv_freq, attention_factor = inverse_frequencies(head_dim, rope)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv_freq).astype(np.float32)
    angles = np.concatenate([freqs, freqs], axis=-1)
    scale = np.float32(attention_factor)
    return (np.cos(angles) * scale).astype(np.float32), (np.sin(angles) * scale).astype(np.float32)


class RotaryEmbedding(nn.Cell):
    def __init__(self, head_dim: int, max_positions: int, rope: RopeParameters) -> None:
        super().__init__()
        cos, sin = rotary_tables(head_dim, max_positions, rope)
        self.cos = Tensor(cos)
        self.sin = Tensor(sin)

    def construct(self, positions: ms.Tensor) -> tuple[ms.Tensor, ms.Tensor]:
        """cos and sin for each token, [T, 1, D], broadcasting over heads."""
        return self.cos[positions].unsqueeze(1), self.sin[positions].unsqueeze(1)


def apply_rotary(x: ms.Tensor, cos: ms.Tensor, sin: ms.Tensor) -> ms.Tensor:
    """x [T, heads, D] rotated by each token's position."""
    half = x.shape[-1] // 2
    rotated_half = mint.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated_half * sin
