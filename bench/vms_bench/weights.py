"""How many parameters and weight bytes each backend streams per decoded token."""

import math
from pathlib import Path

from vms_plugin.models.safetensors_header import read_header


def safetensors_size(model_dir: Path) -> tuple[int, int]:
    """(parameters, bytes in float32) of every tensor in the directory's safetensors files."""
    parameters = 0
    for path in model_dir.glob("*.safetensors"):
        entries, _ = read_header(path)
        parameters += sum(math.prod(entry["shape"]) for entry in entries.values())
    return parameters, 4 * parameters


def gguf_weight_bytes(gguf_path: Path) -> int:
    """Quantized weights are read as stored; the file is nearly all weights."""
    return gguf_path.stat().st_size
