"""RoPE frequency variants of Hugging Face configs: default, linear, llama3 (Llama 3.1+) and yarn (Qwen long context).

Each variant changes only the inverse frequencies, and yarn also scales cos/sin by an attention factor; the formulas
follow transformers' `modeling_rope_utils` so that logits agree with it. Anything else is refused by name.
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class RopeParameters:
    rope_type: str = "default"
    theta: float = 10000.0
    factor: float = 1.0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    original_max_position_embeddings: int | None = None  # llama3, yarn
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn; derived from factor (and mscale) when absent
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True
    partial_rotary_factor: float = 1.0  # the share of each head's features that rotate (GLM), the first ones

    def rotary_dim(self, head_dim: int) -> int:
        """Features of each head that rotate."""
        return int(head_dim * self.partial_rotary_factor)

    @classmethod
    def from_hf_config(cls, config: dict[str, Any]) -> "RopeParameters":
        """Read `rope_parameters` (transformers 5) or `rope_scaling` + `rope_theta` (older configs)."""
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"rope type '{rope_type}' is not supported; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
        needed = {"llama3": ("factor", "original_max_position_embeddings"), "yarn": ("factor",), "linear": ("factor",)}
        missing = [key for key in needed.get(rope_type, ()) if rope.get(key) is None]
        if missing:
            raise ValueError(f"rope type '{rope_type}' needs {', '.join(missing)} in the config's rope parameters")
        original = rope.get("original_max_position_embeddings") or config.get("max_position_embeddings")
        return cls(
            rope_type=rope_type,
            theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            factor=float(rope.get("factor", 1.0)),
            low_freq_factor=float(rope.get("low_freq_factor", 1.0)),
            high_freq_factor=float(rope.get("high_freq_factor", 4.0)),
            original_max_position_embeddings=original,
            beta_fast=float(rope.get("beta_fast") or 32.0),
            beta_slow=float(rope.get("beta_slow") or 1.0),
            attention_factor=rope.get("attention_factor"),
            mscale=rope.get("mscale"),
            mscale_all_dim=rope.get("mscale_all_dim"),
            truncate=bool(rope.get("truncate", True)),
            partial_rotary_factor=float(rope.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0))),
        )


def inverse_frequencies(head_dim: int, rope: RopeParameters) -> tuple[np.ndarray, float]:
    """Inverse frequencies [head_dim / 2] (float32) and the factor that scales cos and sin."""
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    base = (np.float32(rope.theta) ** exponents).astype(np.float32)
    inv_freq = (np.float32(1.0) / base).astype(np.float32)
    if rope.rope_type == "linear":
        return (inv_freq / np.float32(rope.factor)).astype(np.float32), 1.0
    if rope.rope_type == "llama3":
        return _llama3(inv_freq, rope), 1.0
    if rope.rope_type == "yarn":
        return _yarn(base, head_dim, rope), _yarn_attention_factor(rope)
    return inv_freq, 1.0


def _llama3(inv_freq: np.ndarray, rope: RopeParameters) -> np.ndarray:
    """Long wavelengths divided by the factor, short ones kept, the band between interpolated smoothly."""
    old_context = rope.original_max_position_embeddings
    low_freq_wavelen = old_context / rope.low_freq_factor
    high_freq_wavelen = old_context / rope.high_freq_factor
    wavelen = np.float32(2 * math.pi) / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / np.float32(rope.factor), inv_freq)
    smooth = (old_context / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
    smoothed = (1 - smooth) * scaled / np.float32(rope.factor) + smooth * scaled
    medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(medium, smoothed, scaled).astype(np.float32)


def _yarn(base: np.ndarray, head_dim: int, rope: RopeParameters) -> np.ndarray:
    """Slow dimensions interpolated (divided by factor), fast ones extrapolated, a linear ramp between."""

    def correction_dim(rotations: float) -> float:
        return (head_dim * math.log(rope.original_max_position_embeddings / (rotations * 2 * math.pi))) / (
            2 * math.log(rope.theta)
        )

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # as transformers does, to avoid dividing by zero
    ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - low) / (high - low), 0, 1).astype(np.float32)
    extrapolation_weight = 1 - ramp
    extrapolated = np.float32(1.0) / base
    interpolated = np.float32(1.0) / (np.float32(rope.factor) * base)
    return (interpolated * (1 - extrapolation_weight) + extrapolated * extrapolation_weight).astype(np.float32)


def _mscale(scale: float, weight: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * weight * math.log(scale) + 1.0


def _yarn_attention_factor(rope: RopeParameters) -> float:
    if rope.attention_factor is not None:
        return float(rope.attention_factor)
    if rope.mscale and rope.mscale_all_dim:
        return _mscale(rope.factor, rope.mscale) / _mscale(rope.factor, rope.mscale_all_dim)
    return _mscale(rope.factor)


def attention_scale_factor(rope: RopeParameters) -> float:
    """DeepSeek's correction of the softmax scale under scaled RoPE: mscale(factor, mscale_all_dim) squared, 1
    without mscale_all_dim (transformers' yarn_apply_mscale)."""
    if rope.rope_type == "default" or not rope.mscale_all_dim:
        return 1.0
    return _mscale(rope.factor, rope.mscale_all_dim) ** 2
