"""Rotary position embedding tables (rotate-half form, as Llama-family checkpoints in Hugging Face layout use).

cos and sin are tabulated once for every position up to the model's maximum; the fused kernel that rotates q
and k (kernels/cpu.py: rope_and_cache) looks each token's row up by position, so a step does no per-layer work
to prepare them. The device's ops hold them in their own form (LayerOps.rotary).
"""

import numpy as np

from vms_plugin.layers.rope_scaling import RopeParameters, inverse_frequencies


def rotary_tables(head_dim: int, max_positions: int, rope: RopeParameters) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, [max_positions, head_dim], computed in float32 the way transformers does."""
    inv_freq, attention_factor = inverse_frequencies(head_dim, rope)
    freqs = np.outer(np.arange(max_positions, dtype=np.float32), inv_freq).astype(np.float32)
    angles = np.concatenate([freqs, freqs], axis=-1)
    scale = np.float32(attention_factor)
    return (np.cos(angles) * scale).astype(np.float32), (np.sin(angles) * scale).astype(np.float32)
