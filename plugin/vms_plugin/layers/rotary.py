"""Rotary position embedding (the rotate-half form used by Llama-family checkpoints in Hugging Face layout).

cos/sin are tabulated once for every position up to the model's maximum; a step looks its rows up once
(`RotaryEmbedding`) and every layer applies them (`apply_rotary`).
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor, mint, nn


def rotary_tables(head_dim: int, max_positions: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [max_positions, head_dim], computed in float32 the way transformers does."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (np.float32(1.0) / (np.float32(theta) ** exponents)).astype(np.float32)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv_freq).astype(np.float32)
    angles = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


class RotaryEmbedding(nn.Cell):
    def __init__(self, head_dim: int, max_positions: int, theta: float) -> None:
        super().__init__()
        cos, sin = rotary_tables(head_dim, max_positions, theta)
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
