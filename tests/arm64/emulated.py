"""The CPU kernels built for aarch64 and run under qemu-aarch64-static, as operators the kernel tests call exactly
as they call MindSpore's Custom operators on this host.

cpu_kernels.cc is cross-compiled (Debian's g++-aarch64-linux-gnu) for each aarch64 target in ARM_BUILDS, and a
small C++ driver (kernel_driver.cc, cross-compiled too) runs one kernel per call under qemu: the operator writes
every parameter of MindSpore's aot calling convention (inputs, then zeroed outputs) to a file, the driver calls the
kernel and writes them all back, and the operator returns the outputs and updates the Parameters a kernel writes in
place (KV caches). So no aarch64 Python or MindSpore is needed, and the numpy references are the x86 tests' own.
An address table (CausalLm's layers, a LoRA adapter table) names tensors of this process: the tensors it names go
along as regions, and the driver points each address at its region's copy (and the copies come back).
"""

import contextlib
import ctypes
import gc
import hashlib
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

DRIVER_SOURCE = Path(__file__).with_name("kernel_driver.cc")
COMPILER, EMULATOR = "aarch64-linux-gnu-g++", "qemu-aarch64-static"
SYSROOT = "/usr/aarch64-linux-gnu"  # where Debian's cross toolchain keeps the aarch64 libc, libstdc++ and libgomp
THREADS = "2"  # OpenMP threads of an emulated kernel: the split between threads is tested, at emulation's cost


@dataclass(frozen=True)
class ArmTarget:
    march: str  # what -march=native picks on such a CPU
    cpu: str  # the CPU qemu emulates: one without the instructions the build must not use


# Armv8.0 with NEON only (Cortex-A53/A57 era); Kunpeng 920 (TaiShan v110: Armv8.2 with fp16 and the int8 dot product,
# no bf16, no SVE; qemu's Neoverse N1 has the same instructions); Armv8.6 with bf16 and i8mm (Neoverse V1/N2 era).
ARM_BUILDS = {
    "aarch64-armv8": ArmTarget("armv8-a", "cortex-a57"),
    "aarch64-kunpeng920": ArmTarget("armv8.2-a+fp16+dotprod", "neoverse-n1"),
    "aarch64-armv8.6": ArmTarget("armv8.6-a+bf16+i8mm", "max"),
}
ADDRESS_INPUTS = {"CausalLm": (10, 11), "DecoderLayer": (11,)}  # inputs holding tensors' data addresses
DTYPE_NAMES = {  # numpy dtype of the bytes -> the dtype string MindSpore passes to an aot kernel
    "float32": np.float32,
    "float16": np.float16,
    "bfloat16": np.uint16,
    "int8": np.int8,
    "int32": np.int32,
    "int64": np.int64,
}


def require_tools() -> None:
    missing = [tool for tool in (COMPILER, EMULATOR) if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"SKIPPED LOUDLY: {' and '.join(missing)} not installed (make test installs g++-aarch64-linux-gnu and "
            "qemu-user-static as root)"
        )


def _cache_dir() -> Path:
    directory = Path(tempfile.gettempdir()) / "vms-arm64-kernels"
    directory.mkdir(exist_ok=True)
    return directory


def cross_compile(source: Path, flags: tuple[str, ...]) -> Path:
    """`source` compiled for aarch64 with `flags`, once per source and flags."""
    require_tools()
    key = hashlib.sha256(source.read_bytes() + " ".join(flags).encode()).hexdigest()[:16]
    target = _cache_dir() / f"{source.stem}-{key}"
    if not target.exists():
        partial = target.with_suffix(".partial")
        command = [COMPILER, "-O3", "-std=c++20", *flags, "-o", str(partial), str(source)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        assert result.returncode == 0, f"{' '.join(command)}:\n{result.stderr[-4000:]}"
        partial.replace(target)
    return target


@cache
def driver() -> Path:
    return cross_compile(DRIVER_SOURCE, ("-ldl",))


def library(build: str, source: Path | None = None) -> Path:
    """The kernels of `build` (a key of ARM_BUILDS); `source` defaults to the plugin's cpu_kernels.cc."""
    from vms_plugin.kernels.build import SOURCE

    flags = (f"-march={ARM_BUILDS[build].march}", "-fopenmp", "-shared", "-fPIC")
    return cross_compile(source or SOURCE, flags)


def run(build: str, arguments: list[str], library_path: Path) -> subprocess.CompletedProcess:
    command = [EMULATOR, "-cpu", ARM_BUILDS[build].cpu, "-L", SYSROOT, str(driver()), str(library_path), *arguments]
    environment = {"OMP_NUM_THREADS": THREADS, "PATH": "/usr/bin:/bin"}
    return subprocess.run(command, capture_output=True, text=True, env=environment, check=False, timeout=600)


def library_answer(build: str, function: str, source: Path | None = None) -> str:
    """What one of the library's parameterless informational functions (UsesBf16DotProducts, Int8DotProducts)
    answers on that target."""
    result = run(build, ["--ask", function], library(build, source))
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _dtype_name(dtype) -> str:
    """The dtype string MindSpore passes to an aot kernel for a MindSpore dtype."""
    return str(dtype).lower()


def _to_numpy(tensor) -> np.ndarray:
    import mindspore as ms

    if tensor.dtype == ms.bfloat16:
        return tensor.view(ms.uint16).asnumpy()
    return tensor.asnumpy()


def _to_tensor(values: np.ndarray, dtype: str):
    import mindspore as ms
    from mindspore import Tensor

    values = values.copy()  # from a read-only buffer
    return Tensor(values).view(ms.bfloat16) if dtype == "bfloat16" else Tensor(values)


@dataclass(frozen=True)
class Relocation:
    parameter: int
    element: int  # of the parameter's int64 values
    region: int


def _buffers_by_address() -> dict[int, int]:
    """Address -> size in bytes of the data of every live MindSpore Parameter and numpy array of this process: what
    address tables name (weights and caches are Parameters, LoRA pairs numpy arrays). Only initialised Parameters
    are asked their address: a bare tensor left behind by another test may have none, and asking can crash. An array
    is found through what refers to it: numpy arrays are not tracked by the garbage collector themselves."""
    import mindspore as ms

    buffers = {}
    for holder in gc.get_objects():
        for candidate in (holder, *gc.get_referents(holder)):
            kind = type(candidate)  # type(), not isinstance: some objects are dead weak proxies
            if issubclass(kind, np.ndarray):
                buffers.setdefault(candidate.ctypes.data, candidate.nbytes)
            elif issubclass(kind, ms.Parameter) and not candidate.has_init:
                with contextlib.suppress(RuntimeError, TypeError, ValueError):
                    buffers.setdefault(candidate.data_ptr(), candidate.nbytes)
    return buffers


def relocate(name: str, parameters: list[tuple[str, np.ndarray]]) -> tuple[list[tuple[int, int]], list[Relocation]]:
    """The buffers (address, bytes) the address inputs of kernel `name` name, and where each address sits."""
    addresses = [(index, parameters[index][1].reshape(-1).tolist()) for index in ADDRESS_INPUTS.get(name, ())]
    if not any(any(values) for _, values in addresses):
        return [], []
    live, regions, relocations = _buffers_by_address(), {}, []
    for index, values in addresses:
        for element, address in enumerate(values):
            if address in live:
                region = regions.setdefault(address, len(regions))
                relocations.append(Relocation(index, element, region))
    return [(address, live[address]) for address in regions], relocations


def _encode(
    name: str, parameters: list[tuple[str, np.ndarray]], regions: list[tuple[int, int]], relocations: list[Relocation]
) -> bytes:
    def text(value: str) -> bytes:
        return struct.pack("<I", len(value)) + value.encode()

    def sized(raw: bytes) -> bytes:
        return struct.pack("<Q", len(raw)) + raw

    parts = [text(name), struct.pack("<I", len(parameters))]
    for dtype, values in parameters:
        shape = struct.pack(f"<I{values.ndim}q", values.ndim, *values.shape)
        parts += [text(dtype), shape, sized(np.ascontiguousarray(values).tobytes())]
    parts.append(struct.pack("<I", len(regions)))
    parts += [sized(ctypes.string_at(address, size)) for address, size in regions]
    parts.append(struct.pack("<I", len(relocations)))
    parts += [struct.pack("<IQI", r.parameter, r.element, r.region) for r in relocations]
    return b"".join(parts)


def _decode(data: bytes, count: int) -> list[bytes]:
    results, offset = [], 0
    for _ in range(count):
        (size,) = struct.unpack_from("<Q", data, offset)
        results.append(data[offset + 8 : offset + 8 + size])
        offset += 8 + size
    return results


def _write_in_place(address: int, data: bytes) -> None:
    """A tensor's own memory overwritten, so that it stays the object (and the address) its holders know."""
    ctypes.memmove(address, data, len(data))


class EmulatedKernel:
    """Kernel `name` of an aarch64 build, called like `ops.Custom(...)(*inputs)` (vms_plugin.kernels.cpu)."""

    def __init__(self, name: str, build: str, source: Path | None = None) -> None:
        from vms_plugin.kernels.cpu import _SIGNATURES

        self.name, self.build, self.library = name, build, library(build, source)
        self.out_shape, self.out_dtype = _SIGNATURES[name]

    def __call__(self, *inputs):
        from mindspore import Parameter

        shapes = [list(tensor.shape) for tensor in inputs]
        out_shapes, out_dtypes = self.out_shape(*shapes), self.out_dtype(*(tensor.dtype for tensor in inputs))
        single = not isinstance(out_dtypes, tuple)
        out_shapes, out_dtypes = ([out_shapes], [out_dtypes]) if single else (out_shapes, out_dtypes)
        parameters = [(_dtype_name(tensor.dtype), _to_numpy(tensor)) for tensor in inputs]
        for shape, name in zip(out_shapes, map(_dtype_name, out_dtypes), strict=True):
            parameters.append((name, np.zeros(shape, DTYPE_NAMES[name])))
        regions, relocations = relocate(self.name, parameters)
        with tempfile.TemporaryDirectory() as directory:
            call, answer = Path(directory) / "call", Path(directory) / "result"
            call.write_bytes(_encode(self.name, parameters, regions, relocations))
            result = run(self.build, [str(call), str(answer)], self.library)
            if result.returncode != 0:
                raise RuntimeError(f"{self.name} on {self.build} failed ({result.returncode}): {result.stderr[-2000:]}")
            values = _decode(answer.read_bytes(), len(parameters) + len(regions))
        updated = [
            (tensor.data_ptr(), after)
            for tensor, (_, before), after in zip(inputs, parameters, values, strict=False)
            if isinstance(tensor, Parameter) and after != before.tobytes()
        ]
        updated += [
            (address, after)
            for (address, size), after in zip(regions, values[len(parameters) :], strict=True)
            if after != ctypes.string_at(address, size)
        ]
        for address, after in updated:
            _write_in_place(address, after)
        produced = zip(parameters[len(inputs) :], values[len(inputs) : len(parameters)], strict=True)
        outputs = [
            _to_tensor(np.frombuffer(after, zeros.dtype).reshape(zeros.shape), dtype)
            for (dtype, zeros), after in produced
        ]
        return outputs[0] if single else tuple(outputs)
