"""The packed layout of linear-layer weights that the CPU kernels stream (see the top of cpu_kernels.cc).

A weight W [out, in] becomes panels [ceil(out / 64), in, 64]: panel p is columns 64p..64p+63 of W^T, zero padded.
A decode step multiplies one row by every weight, so the weights must be read front to back at memory speed;
in this layout each core reads its panels sequentially, where W^T would be read as 64-float pieces strided by
the row length.
"""

import numpy as np

PANEL = 64  # kPanel in cpu_kernels.cc


def packed_shape(in_features: int, out_features: int) -> tuple[int, int, int]:
    return (-(-out_features // PANEL), in_features, PANEL)


def pack_linear_weight(weight: np.ndarray) -> np.ndarray:
    """W [out, in] -> panels [ceil(out / 64), in, 64] (float32, contiguous)."""
    out_features, in_features = weight.shape
    panels, _, _ = packed_shape(in_features, out_features)
    packed = np.empty((panels, in_features, PANEL), dtype=np.float32)
    whole = out_features // PANEL  # full panels are copied in one pass; only the last one needs padding
    packed[:whole] = weight[: whole * PANEL].reshape(whole, PANEL, in_features).transpose(0, 2, 1)
    if whole < panels:
        rest = weight[whole * PANEL :]
        packed[whole, :, : len(rest)] = rest.T
        packed[whole, :, len(rest) :] = 0.0
    return packed
