"""Load Hugging Face safetensors checkpoints straight into MindSpore parameters.

The files are memory-mapped and read one tensor at a time, so peak memory stays near the model's own size
rather than twice it. The format is read directly (a JSON header, then raw little-endian bytes) because the
numpy reader of the `safetensors` package cannot return bfloat16, the dtype most checkpoints ship in.
An int8 linear weight is either read as int8 with its `weight_scale` (a compressed-tensors checkpoint) or
quantized here from the float checkpoint (layers/int8.py).
"""

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import mindspore as ms
import numpy as np
from mindspore import Parameter, nn
from tqdm import tqdm

from vms_plugin.layers.experts import EXPERT, EXPERT_WEIGHTS
from vms_plugin.layers.int8 import quantize_per_channel
from vms_plugin.layers.latent_attention import LATENT_CACHE
from vms_plugin.layers.linear import DEVICE_WEIGHT
from vms_plugin.layers.parallel import Part
from vms_plugin.layers.precision import dtype_name
from vms_plugin.models.safetensors_header import CheckpointError, read_header
from vms_plugin.ops import layer_ops

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


class SafetensorsFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries, self.data_start = read_header(path)
        self.buffer = np.memmap(path, dtype=np.uint8, mode="r")

    def _stored(self, name: str, dtype: np.dtype, part: Part | None) -> np.ndarray:
        """The tensor as stored (a view of the file), or `part` of it: only the part's pages are read."""
        entry = self.entries[name]
        begin, end = entry["data_offsets"]
        values = self.buffer[self.data_start + begin : self.data_start + end].view(dtype).reshape(entry["shape"])
        return values if part is None else part.of(values)

    def read_float32(self, name: str, part: Part | None = None) -> np.ndarray:
        dtype = self.entries[name]["dtype"]
        if dtype == "F32":  # a read-only view of the file: its users copy it (ms.Tensor, packing) while it is open
            return self._stored(name, np.float32, part)
        if dtype == "BF16":
            # bfloat16 is the top half of a float32: widen by shifting the bits into place.
            return (self._stored(name, np.uint16, part).astype(np.uint32) << 16).view(np.float32)
        if dtype in _NUMPY_DTYPES:
            return self._stored(name, _NUMPY_DTYPES[dtype], part).astype(np.float32)
        raise CheckpointError(f"{self.path}: tensor {name} has dtype {dtype}; supported: BF16, F16, F32, F64")

    def is_int8(self, name: str) -> bool:
        return self.entries[name]["dtype"] == "I8"

    def read_int8(self, name: str, part: Part | None = None) -> np.ndarray:
        return self._stored(name, np.int8, part)


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


def load_weights(
    model: nn.Cell,
    model_dir: Path,
    stacked: Mapping[str, tuple[str, ...]],
    parts: Callable[[str], tuple[Part, ...] | None] = lambda name: None,
    experts: Callable[[str], range | None] = lambda name: None,
) -> None:
    """Fill every weight of `model` from the checkpoint; `stacked` names checkpoint tensors concatenated (dim 0),
    `parts` gives the part of each that a tensor-parallel rank holds (layers/parallel.py; None: all of them).

    Parameters named `device_weight` (see layers/linear.py) take the checkpoint's `weight` in the device's layout;
    those named `expert_weights` (layers/experts.py) one such weight per expert, stacked: the experts `experts`
    names (an expert-parallel rank's), all of them when it says None.
    """
    with open_checkpoint(model_dir) as tensors:
        parameters = list(model.parameters_and_names())
        # A bar on a terminal (a 30B mixture of experts is thousands of tensors); logs get none (disable=None).
        for name, param in tqdm(parameters, desc="vms_plugin: loading weights", unit="parameter", disable=None):
            if name.endswith(("k_cache", "v_cache", LATENT_CACHE)):
                continue
            sources = _source_names(name, stacked)
            if name.endswith(EXPERT_WEIGHTS):
                held = experts(name) or range(param.shape[0])
                source_parts = parts(name) or (None,) * len(sources)
                param.set_data(_stacked_experts(tensors, model_dir, name, sources, source_parts, held, param))
                continue
            _check_present(tensors, sources, model_dir, name)
            source_parts = parts(name) or (None,) * len(sources)
            shape, dtype = tuple(param.shape), dtype_name(param.dtype)
            param.set_data(_filled(tensors, name, sources, source_parts, shape, dtype, name.endswith(DEVICE_WEIGHT)))


def _check_present(
    tensors: Mapping[str, SafetensorsFile], sources: tuple[str, ...], model_dir: Path, name: str
) -> None:
    missing = [source for source in sources if source not in tensors]
    if missing:
        raise CheckpointError(f"checkpoint in {model_dir} has no tensor {missing[0]} (needed for {name})")


def _filled(
    tensors: Mapping[str, SafetensorsFile],
    name: str,
    sources: tuple[str, ...],
    source_parts: tuple[Part | None, ...],
    shape: tuple[int, ...],
    dtype: str,
    device_weight: bool,
) -> ms.Tensor:
    """Parameter `name` of `shape` and `dtype` from its checkpoint sources concatenated (dim 0), a device weight
    laid out for the device (int8: quantized unless stored so); CheckpointError when they do not fit it."""
    if device_weight and dtype == "int8":
        quantized, scales = zip(
            *(_int8_weight(tensors, source, part) for source, part in zip(sources, source_parts, strict=True)),
            strict=True,
        )
        value = np.concatenate(quantized, axis=0)
        fitted = _laid_out(value, shape, dtype, device_weight=True, scales=np.concatenate(scales))
    else:
        pieces = [
            tensors[source].read_float32(source, part) for source, part in zip(sources, source_parts, strict=True)
        ]
        value = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
        fitted = _laid_out(value, shape, dtype, device_weight)
    if fitted is None:
        raise CheckpointError(f"tensor {sources[0]} has shape {tuple(value.shape)}, which does not fit {name}")
    return fitted


def _stacked_experts(
    tensors: Mapping[str, SafetensorsFile],
    model_dir: Path,
    name: str,
    sources: tuple[str, ...],
    source_parts: tuple[Part | None, ...],
    held: range,
    param: Parameter,
) -> ms.Tensor:
    """An `expert_weights` parameter [X', ...]: each held expert e's checkpoint weights (`sources` with e for
    {expert}, `source_parts` of them) as one device weight, stacked. Read one expert at a time, as a dense layer's
    weights are."""
    shape, dtype = tuple(param.shape[1:]), dtype_name(param.dtype)
    if len(held) != param.shape[0]:
        raise CheckpointError(f"{name} holds {param.shape[0]} experts, not the {len(held)} asked for")
    stacked = None  # made with the first expert's numpy type (bfloat16's is MindSpore's own)
    for index, expert in enumerate(held):
        expert_sources = tuple(source.replace(EXPERT, str(expert)) for source in sources)
        _check_present(tensors, expert_sources, model_dir, name)
        fitted = _filled(tensors, name, expert_sources, source_parts, shape, dtype, device_weight=True)
        values = fitted.asnumpy()
        if stacked is None:
            stacked = np.empty(tuple(param.shape), dtype=values.dtype)
        stacked[index] = values
    return ms.Tensor(stacked)


def _int8_weight(tensors: Mapping[str, SafetensorsFile], name: str, part: Part | None) -> tuple[np.ndarray, np.ndarray]:
    """(q [out, in] int8, scale [out]) of a checkpoint weight, or of `part` of it: as stored with its weight_scale
    if it is int8, else quantized per output channel."""
    handle = tensors[name]
    if not handle.is_int8(name):
        if part is None or part.axis == 0:
            return quantize_per_channel(handle.read_float32(name, part))
        # A channel's scale comes from its whole row, as on one rank: read whole, then keep this rank's columns.
        quantized, scale = quantize_per_channel(handle.read_float32(name))
        return part.of(quantized), scale
    scale_name = name.removesuffix("weight") + "weight_scale"
    if scale_name not in tensors:
        raise CheckpointError(f"int8 tensor {name} has no {scale_name} in the checkpoint")
    quantized = handle.read_int8(name, part)
    scale = tensors[scale_name].read_float32(scale_name).reshape(-1)  # [out, 1] per channel, [1] per tensor
    scale = np.broadcast_to(scale, (handle.entries[name]["shape"][0],)).astype(np.float32)
    return quantized, scale if part is None or part.axis == 1 else part.of(scale)


def _laid_out(
    value: np.ndarray, shape: tuple[int, ...], dtype: str, device_weight: bool, scales: np.ndarray | None = None
) -> ms.Tensor | None:
    """`value` as a parameter of `shape` and storage type `dtype` holds it, or None when it does not fit; a device
    weight (an [out, in] checkpoint weight, int8 with `scales` for an int8 parameter) is converted into the
    device's layout and storage type."""
    if not device_weight:
        return ms.Tensor(value) if tuple(value.shape) == shape else None
    ops = layer_ops()
    if value.ndim != 2 or ops.linear_weight_shape(value.shape[1], value.shape[0], dtype) != shape:
        return None
    return ops.linear_weight(value, dtype, scales)


def _source_names(name: str, stacked: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    for suffix, parts in stacked.items():
        if name.endswith(suffix):
            prefix = name[: -len(suffix)]
            return tuple(prefix + part for part in parts)
    if name.endswith(DEVICE_WEIGHT):
        return (name[: -len(DEVICE_WEIGHT)] + "weight",)
    return (name,)
