"""The header of a safetensors file (a little-endian length, then JSON), read without MindSpore or numpy.

The weight loader maps tensors through it, and `vms bench` counts a model's parameters with it.
"""

import json
import struct
from pathlib import Path


class CheckpointError(ValueError):
    """The checkpoint is missing, unreadable or does not fit the model; the message says which file or tensor."""


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """Tensor entries (dtype, shape, data_offsets) by name, and where the data starts in the file."""
    try:
        with path.open("rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_size))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    header.pop("__metadata__", None)
    return header, 8 + header_size


def check_checkpoint(model_dir: Path) -> None:
    """Raise CheckpointError unless `model_dir` holds safetensors files whose headers read and whose data is all
    there: a missing or truncated download is refused before an engine starts, not after it has loaded for a while."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"model directory {model_dir} has no *.safetensors weights (the only format vms loads)")
    for path in files:
        entries, data_start = read_header(path)
        needed = data_start + max((entry["data_offsets"][1] for entry in entries.values()), default=0)
        size = path.stat().st_size
        if size < needed:
            raise CheckpointError(f"{path} is truncated: {size} bytes, its header describes {needed}")
