"""The packed layouts of linear-layer weights that the CPU kernels stream (see the top of cpu_kernels.cc).

A weight W [out, in] becomes panels of 64 output columns, panel p holding columns 64p..64p+63 of W^T, zero padded.
A decode step multiplies one row by every weight, so the weights must be read front to back at memory speed;
in this layout each core reads its panels sequentially, where W^T would be read as 64-value pieces strided by
the row length.
- float32, float16: [ceil(out / 64), in, 64].
- bfloat16: [ceil(out / 64), ceil(in / 2), 64, 2]: the weights of k = 2i and 2i + 1 for one column side by side,
  so that one 32-bit lane holds a pair. numpy has no bfloat16: the values travel as their uint16 bit patterns.
"""

import numpy as np

PANEL = 64  # kPanel in cpu_kernels.cc
STORAGE_TYPES = ("float32", "float16", "bfloat16")


def packed_shape(in_features: int, out_features: int, dtype: str = "float32") -> tuple[int, ...]:
    panels = -(-out_features // PANEL)
    if dtype == "bfloat16":
        return (panels, -(-in_features // 2), PANEL, 2)
    if dtype in STORAGE_TYPES:
        return (panels, in_features, PANEL)
    raise ValueError(f"no packed layout for {dtype}; allowed: {', '.join(STORAGE_TYPES)}")


def pack_linear_weight(weight: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """W [out, in] (float32) -> its panels: float32, float16, or bfloat16 bit patterns (uint16)."""
    out_features, in_features = weight.shape
    shape = packed_shape(in_features, out_features, dtype)
    panels, depth = shape[0], 2 if dtype == "bfloat16" else 1
    padded = np.zeros((panels * PANEL, shape[1] * depth), dtype=np.float32)
    padded[:out_features, :in_features] = weight
    # [panel, column, step, depth] -> [panel, step, column, depth]
    packed = padded.reshape(panels, PANEL, shape[1], depth).transpose(0, 2, 1, 3).reshape(shape)
    if dtype == "bfloat16":
        return bfloat16_bits(packed)
    return np.ascontiguousarray(packed, dtype=np.float16 if dtype == "float16" else np.float32)


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest with ties to even (as torch rounds)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
