"""Compile the C++ kernels once per source and CPU, into a cache directory, and return the shared library.

The library is built with -march=native, so the cache key holds the source, the flags, the architecture and the
CPU's features (x86's `flags` line of /proc/cpuinfo, aarch64's `Features`): a home directory shared between
machines never hands one CPU a library built for another. The build
writes to a temporary file and renames it, so concurrent workers never load a half-written library.
"""

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

SOURCE = Path(__file__).with_name("cpu_kernels.cc")
COMPILER_FLAGS = ("-O3", "-march=native", "-std=c++20", "-fopenmp", "-shared", "-fPIC")
CACHE_ENV = "VMS_KERNEL_CACHE"

logger = logging.getLogger(__name__)


class KernelBuildError(RuntimeError):
    pass


def cache_dir() -> Path:
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vms" / "kernels"


FEATURE_LINES = ("flags", "Features")  # /proc/cpuinfo's instruction set extensions: x86, aarch64


def cpu_features(cpuinfo: str) -> str:
    """The first line of `cpuinfo` naming the CPU's instruction set extensions; empty if it names none."""
    return next((line for line in cpuinfo.splitlines() if line.split(":")[0].strip() in FEATURE_LINES), "")


def _cpu_flags() -> str:
    try:
        return cpu_features(Path("/proc/cpuinfo").read_text()) or platform.processor()
    except OSError:
        return platform.processor()


def library_path(source: Path = SOURCE, extra_flags: tuple[str, ...] = ()) -> Path:
    flags = " ".join(COMPILER_FLAGS + extra_flags)
    key = hashlib.sha256(
        b"\0".join([source.read_bytes(), flags.encode(), platform.machine().encode(), _cpu_flags().encode()])
    ).hexdigest()[:16]
    return cache_dir() / f"{source.stem}-{key}.so"


@cache
def build_library(source: Path = SOURCE, extra_flags: tuple[str, ...] = ()) -> Path:
    """The compiled library for `source`, building it if this machine has not yet (~3 s).

    `extra_flags` follow -march=native: tests build the AVX2 form on an AVX-512 host with ("-mno-avx512f",).
    """
    target = library_path(source, extra_flags)
    if target.exists():
        return target
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise KernelBuildError(
            "vms compiles its CPU kernels on first use and needs a C++ compiler: install g++ "
            f"(Debian/Ubuntu: apt-get install g++), or set {CACHE_ENV} to a directory holding a prebuilt {target.name}"
        )
    logger.info("compiling the vms CPU kernels into %s (once per machine, ~2 s)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".so.tmp", delete=False) as partial:
        partial_path = Path(partial.name)
    try:
        result = subprocess.run(
            [compiler, *COMPILER_FLAGS, *extra_flags, "-o", str(partial_path), str(source)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise KernelBuildError(f"compiling {source.name} with {compiler} failed:\n{result.stderr.strip()}")
        partial_path.replace(target)
    finally:
        partial_path.unlink(missing_ok=True)
    return target
