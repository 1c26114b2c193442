"""How many parameters and weight bytes each backend streams per decoded token."""

import json
import struct
from pathlib import Path

import numpy as np


def safetensors_size(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes in float32) of every tensor in the directory's safetensors files."""
    parameters = 0
    for path in model_dir.glob("*.safetensors"):
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
        header.pop("__metadata__", None)
        parameters += sum(int(np.prod(entry["shape"])) for entry in header.values())
    return parameters, 4 * parameters


def gguf_weight_bytes(gguf_path: Path) -> int:
    """Quantized weights are read as stored; the file is nearly all weights."""
    return gguf_path.stat().st_size
