"""The install-time architecture check (vms_supervisor/native_arch.py) on real ELF files: the installed packages of
this machine pass; a MindSpore whose extension module is built for another architecture (a real one, cross-compiled
here for aarch64, standing where an x86_64 build would stand in an arm64 image) stops with one line naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from arm64.emulated import require_tools

from vms_supervisor.native_arch import USAGE_ERROR, elf_machine, mismatches, this_machine


def check(env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "vms_supervisor.native_arch"]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_the_installed_packages_are_built_for_this_machine() -> None:
    assert mismatches(this_machine()) == []
    result = check()
    assert result.returncode == 0, result.stderr
    assert f"built for {this_machine()}" in result.stdout


def test_an_extension_module_built_for_another_architecture_stops_the_install_with_one_line(tmp_path: Path) -> None:
    require_tools()
    package = tmp_path / "mindspore"
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = tmp_path / "expression.c"
    source.write_text("int expression(void) { return 0; }\n")
    extension = package / "_c_expression.cpython-311-x86_64-linux-gnu.so"  # named as the x86_64 wheel names it
    subprocess.run(["aarch64-linux-gnu-gcc", "-shared", "-fPIC", "-o", extension, source], check=True)
    assert elf_machine(extension) == "aarch64"

    result = check({"PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"})
    assert result.returncode == USAGE_ERROR
    assert result.stderr.splitlines() == [
        f"vms: mindspore's native library {extension.name} is built for aarch64, but this machine is "
        f"{this_machine()}: install mindspore's {this_machine()} build"
    ]


@pytest.mark.parametrize("content", [b"", b"#!/bin/sh\n", b"\x7fELF"])
def test_what_is_not_a_whole_elf_file_is_not_judged(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.so"
    path.write_bytes(content)
    assert elf_machine(path) is None
