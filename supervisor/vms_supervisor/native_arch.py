"""Whether the native libraries of MindSpore, vLLM and torch are built for this machine's architecture.

MindSpore's wheels are tagged py3-none-any, so pip installs an x86_64 build on an aarch64 host (or image) without a
word, and the first `import mindspore` then fails deep inside with a loader error. The ELF header of each package's
Python extension modules (what an import loads) says what they were built for; this checks it without importing
anything. Other shared libraries are not judged: MindSpore's x86_64 wheel carries aarch64 ones on purpose, the AI
CPU kernels that run on the Ascend chip's own Arm cores. `python -m
vms_supervisor.native_arch` is the image's install-time check (exit 2 and one line when a package is built for
another architecture); `vms doctor` reports the same.
"""

import importlib.util
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("mindspore", "vllm", "torch")
EXTENSION_PATTERNS = ("*.cpython-*.so", "*.abi3.so")
ELF_MACHINES = {0x03: "i386", 0x3E: "x86_64", 0x28: "arm", 0xB7: "aarch64", 0xF3: "riscv64", 0x15: "ppc64"}
MACHINE_NAMES = {"amd64": "x86_64", "arm64": "aarch64"}  # platform.machine() spellings of the same architecture
USAGE_ERROR = 2


@dataclass(frozen=True)
class Mismatch:
    package: str
    library: Path
    built_for: str


def this_machine() -> str:
    machine = platform.machine().lower()
    return MACHINE_NAMES.get(machine, machine)


def elf_machine(path: Path) -> str | None:
    """The architecture an ELF file is built for; None when it is not an ELF file."""
    with path.open("rb") as handle:
        header = handle.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    code = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(code, f"ELF machine {code:#x}")


def package_directory(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)  # finds it without importing it (an import could crash)
    locations = spec.submodule_search_locations if spec else None
    return Path(next(iter(locations))) if locations else None


def mismatches(machine: str, packages: tuple[str, ...] = PACKAGES) -> list[Mismatch]:
    """For each installed package of `packages`, its first extension module built for another architecture."""
    found = []
    for package in packages:
        directory = package_directory(package)
        extensions = [path for pattern in EXTENSION_PATTERNS for path in directory.rglob(pattern)] if directory else []
        for library in sorted(extensions):
            built_for = elf_machine(library) if library.is_file() else None
            if built_for and built_for != machine:
                found.append(Mismatch(package, library, built_for))
                break
    return found


def describe(mismatch: Mismatch, machine: str) -> str:
    return (
        f"{mismatch.package}'s native library {mismatch.library.name} is built for {mismatch.built_for}, but this "
        f"machine is {machine}: install {mismatch.package}'s {machine} build"
    )


def main() -> int:
    machine = this_machine()
    found = mismatches(machine)
    if found:
        print(f"vms: {describe(found[0], machine)}", file=sys.stderr)
        return USAGE_ERROR
    print(f"native libraries of {', '.join(PACKAGES)}: built for {machine}, as this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
