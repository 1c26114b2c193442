"""image/relabel_wheel.py: a wheel copied under a local version label installs with pip as that version, its
files and their modes intact (the arm64 base build relies on it for torch 2.13.0 -> 2.13.0+cpu)."""

import importlib.util
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _relabel_module():
    spec = importlib.util.spec_from_file_location("relabel_wheel", ROOT / "image" / "relabel_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny_wheel(directory: Path) -> Path:
    """A wheel as pip builds them: a module, an executable script inside the package and its dist-info."""
    wheel = directory / "tinypkg-1.0.0-py3-none-any.whl"
    info = "tinypkg-1.0.0.dist-info/"
    files = {
        "tinypkg/__init__.py": b"VALUE = 7\n",
        "tinypkg/bin/tool": b"#!/bin/sh\necho tool\n",
        info + "METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0.0\n\n",
        info + "WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            entry = zipfile.ZipInfo(name)
            entry.external_attr = (stat.S_IFREG | (0o755 if name.endswith("tool") else 0o644)) << 16
            archive.writestr(entry, data)
        archive.writestr(info + "RECORD", "")
    return wheel


def test_a_relabelled_wheel_installs_as_the_new_version_with_its_files_and_modes(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    relabelled = _relabel_module().relabel(_tiny_wheel(tmp_path), "1.0.0+cpu", out)
    assert relabelled.name == "tinypkg-1.0.0+cpu-py3-none-any.whl"

    target = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target)]
    result = subprocess.run([*install, str(relabelled)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr  # pip checks every RECORD hash and size

    metadata = (target / "tinypkg-1.0.0+cpu.dist-info" / "METADATA").read_text()
    assert "\nVersion: 1.0.0+cpu\n" in metadata
    assert (target / "tinypkg" / "__init__.py").read_text() == "VALUE = 7\n"
    assert (target / "tinypkg" / "bin" / "tool").stat().st_mode & stat.S_IXUSR
    assert not (target / "tinypkg-1.0.0.dist-info").exists()
