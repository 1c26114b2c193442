"""Symmetric int8 weights with one scale per output channel: W[n] ~ scale[n] * q[n], q in [-127, 127].

Per channel because a layer's output channels differ in range by orders of magnitude; symmetric because weights
centre on zero, so the W8A8 product needs no zero-point terms. -128 is left unused, as every int8 W8A8 format
does, so that a negated weight stays representable.
"""

from dataclasses import dataclass

import numpy as np

INT8_MAX = 127


@dataclass(frozen=True)
class Int8Scheme:
    """How a model's int8 linear layers compute (vms_plugin/quantization.py chooses it)."""

    int8_activations: bool  # W8A8: each linear layer's input quantized to int8 per token; else W8A16
    lm_head: bool = False  # the output projection (and a tied embedding) int8 too, per vocabulary row

    @property
    def name(self) -> str:
        return ("W8A8" if self.int8_activations else "W8A16") + (" with int8 lm_head" if self.lm_head else "")


def quantize_per_channel(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [out, in] (float) -> (q [out, in] int8, scale [out] float32), q = round(W / scale), ties to even."""
    max_abs = np.abs(weight).max(axis=1).astype(np.float32)
    scales = np.where(max_abs > 0, max_abs / INT8_MAX, 1.0).astype(np.float32)
    quantized = np.clip(np.rint(weight / scales[:, None]), -INT8_MAX, INT8_MAX).astype(np.int8)
    return quantized, scales
