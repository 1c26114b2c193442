"""The packed layouts of linear-layer weights that the CPU kernels stream (see the top of cpu_kernels.cc).

A weight W [out, in] becomes panels of 64 output columns, panel p holding columns 64p..64p+63 of W^T, zero padded.
A decode step multiplies one row by every weight, so the weights must be read front to back at memory speed;
in this layout each core reads its panels sequentially, where W^T would be read as 64-value pieces strided by
the row length.
- float32, float16: [ceil(out / 64), in, 64].
- bfloat16: [ceil(out / 64), ceil(in / 2), 64, 2]: the weights of k = 2i and 2i + 1 for one column side by side,
  so that one 32-bit lane holds a pair. numpy has no bfloat16: the values travel as their uint16 bit patterns.
- int8 (W = scale[n] * q[n, k], layers/quantization.py): bytes [ceil(out / 64), 512 + ceil(in / 4) * 256], each
  panel a header of its 64 columns' float32 scales and int32 sums of q (for the W8A8 kernel's unsigned offset),
  then the steps [ceil(in / 4), 64, 4]: the four k of one column in one 32-bit lane, VNNI's operand layout.
"""

import numpy as np

PANEL = 64  # kPanel in cpu_kernels.cc
STORAGE_TYPES = ("float32", "float16", "bfloat16")
WEIGHT_TYPES = (*STORAGE_TYPES, "int8")
INT8_HEADER = 2 * PANEL * 4  # kInt8Header: 64 float32 scales, 64 int32 column sums


def packed_shape(in_features: int, out_features: int, dtype: str = "float32") -> tuple[int, ...]:
    panels = -(-out_features // PANEL)
    if dtype == "bfloat16":
        return (panels, -(-in_features // 2), PANEL, 2)
    if dtype == "int8":
        return (panels, INT8_HEADER + -(-in_features // 4) * PANEL * 4)
    if dtype in STORAGE_TYPES:
        return (panels, in_features, PANEL)
    raise ValueError(f"no packed layout for {dtype}; allowed: {', '.join(WEIGHT_TYPES)}")


def _panels(weight: np.ndarray, depth: int) -> np.ndarray:
    """W [out, in] -> [panels, ceil(in / depth), 64, depth], zero padded, in W's dtype."""
    out_features, in_features = weight.shape
    panels, steps = -(-out_features // PANEL), -(-in_features // depth)
    padded = np.zeros((panels * PANEL, steps * depth), dtype=weight.dtype)
    padded[:out_features, :in_features] = weight
    # [panel, column, step, depth] -> [panel, step, column, depth]
    return np.ascontiguousarray(padded.reshape(panels, PANEL, steps, depth).transpose(0, 2, 1, 3))


def pack_linear_weight(weight: np.ndarray, dtype: str = "float32") -> np.ndarray:
    """W [out, in] (float32) -> its panels: float32, float16, or bfloat16 bit patterns (uint16)."""
    out_features, in_features = weight.shape
    shape = packed_shape(in_features, out_features, dtype)
    if dtype == "bfloat16":
        # Rounded before the panels are laid out: the layout's copies are then of 2-byte values, not 4-byte ones.
        return _panels(bfloat16_bits(weight), 2).reshape(shape)
    values = _panels(weight.astype(np.float32), 1).reshape(shape)
    return values.astype(np.float16) if dtype == "float16" else values


def pack_int8_linear_weight(quantized: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """q [out, in] (int8) and its per-output-column scales [out] -> the int8 panels, headers included."""
    out_features, in_features = quantized.shape
    panels = -(-out_features // PANEL)
    padded_scales = np.zeros(panels * PANEL, dtype=np.float32)
    padded_scales[:out_features] = scales
    sums = np.zeros(panels * PANEL, dtype=np.int32)
    sums[:out_features] = quantized.astype(np.int32).sum(axis=1)
    header = [padded_scales.reshape(panels, PANEL).view(np.int8), sums.reshape(panels, PANEL).view(np.int8)]
    steps = _panels(quantized.astype(np.int8), 4).reshape(panels, -1)
    packed = np.concatenate([*header, steps], axis=1)
    assert packed.shape == packed_shape(in_features, out_features, "int8")
    return packed


def bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, rounded to nearest with ties to even (as torch rounds)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return rounded.astype(np.uint16)


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
