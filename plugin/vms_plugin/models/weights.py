"""Load Hugging Face safetensors checkpoints straight into MindSpore parameters.

The files are memory-mapped and read one tensor at a time, so peak memory stays near the model's own size
rather than twice it. The format is read directly (a JSON header, then raw little-endian bytes) because the
numpy reader of the `safetensors` package cannot return bfloat16, the dtype most checkpoints ship in.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn

from vms_plugin.layers.linear import DEVICE_WEIGHT
from vms_plugin.layers.precision import dtype_name
from vms_plugin.models.safetensors_header import CheckpointError, read_header
from vms_plugin.ops import layer_ops

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


class SafetensorsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries, self.data_start = read_header(path)
        self.buffer = np.memmap(path, dtype=np.uint8, mode="r")

    def read_float32(self, name: str) -> np.ndarray:
        entry = self.entries[name]
        begin, end = entry["data_offsets"]
        raw = self.buffer[self.data_start + begin : self.data_start + end]
        dtype = entry["dtype"]
        if dtype == "F32":  # a read-only view of the file: its users copy it (ms.Tensor, packing) while it is open
            values = raw.view(np.float32)
        elif dtype == "BF16":
            # bfloat16 is the top half of a float32: widen by shifting the bits into place.
            values = (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        elif dtype in _NUMPY_DTYPES:
            values = raw.view(_NUMPY_DTYPES[dtype]).astype(np.float32)
        else:
            raise CheckpointError(f"{self.path}: tensor {name} has dtype {dtype}; supported: BF16, F16, F32, F64")
        return values.reshape(entry["shape"])


@contextmanager
def open_checkpoint(model_dir: Path) -> Iterator[Mapping[str, SafetensorsFile]]:
    """Map every tensor name of a (possibly sharded) checkpoint to the file that holds it."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"no *.safetensors files in {model_dir}")
    opened = [SafetensorsFile(path) for path in files]
    try:
        yield {name: handle for handle in opened for name in handle.entries}
    finally:
        for handle in opened:
            handle.buffer._mmap.close()  # release the mapping now, not at garbage collection


def load_weights(model: nn.Cell, model_dir: Path, stacked: Mapping[str, tuple[str, ...]]) -> None:
    """Fill every weight of `model` from the checkpoint; `stacked` names checkpoint tensors concatenated (dim 0).

    Parameters named `device_weight` (see layers/linear.py) take the checkpoint's `weight` in the device's layout.
    """
    with open_checkpoint(model_dir) as tensors:
        for name, param in model.parameters_and_names():
            if name.endswith(("k_cache", "v_cache")):
                continue
            sources = _source_names(name, stacked)
            missing = [source for source in sources if source not in tensors]
            if missing:
                raise CheckpointError(f"checkpoint in {model_dir} has no tensor {missing[0]} (needed for {name})")
            parts = [tensors[source].read_float32(source) for source in sources]
            value = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
            fitted = _laid_out(value, param, name.endswith(DEVICE_WEIGHT))
            if fitted is None:
                raise CheckpointError(f"tensor {sources[0]} has shape {tuple(value.shape)}, which does not fit {name}")
            param.set_data(fitted)


def _laid_out(value: np.ndarray, param: Parameter, device_weight: bool) -> ms.Tensor | None:
    """`value` as `param` holds it, or None when it does not fit; a device weight (an [out, in] checkpoint weight)
    is converted into the device's layout and the parameter's storage type."""
    shape = tuple(param.shape)
    if not device_weight:
        return ms.Tensor(value) if tuple(value.shape) == shape else None
    ops, dtype = layer_ops(), dtype_name(param.dtype)
    if value.ndim != 2 or ops.linear_weight_shape(value.shape[1], value.shape[0], dtype) != shape:
        return None
    return ops.linear_weight(value, dtype)


def _source_names(name: str, stacked: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    for suffix, parts in stacked.items():
        if name.endswith(suffix):
            prefix = name[: -len(suffix)]
            return tuple(prefix + part for part in parts)
    if name.endswith(DEVICE_WEIGHT):
        return (name[: -len(DEVICE_WEIGHT)] + "weight",)
    return (name,)
