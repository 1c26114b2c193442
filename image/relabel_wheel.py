"""Copy a wheel under another version (a local version label such as 2.13.0 -> 2.13.0+cpu): the dist-info
directory, METADATA's Version and the RECORD are rewritten, every other file is copied as it is.

Used only by arm64-base.sh, where PyPI is the one reachable index and a pinned local version exists elsewhere.

    python3 relabel_wheel.py WHEEL NEW_VERSION OUT_DIRECTORY
"""

import base64
import copy
import hashlib
import sys
import zipfile
from pathlib import Path


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def relabel(wheel: Path, version: str, out_directory: Path) -> Path:
    project, old_version, tags = wheel.name.removesuffix(".whl").split("-", 2)
    old_info, new_info = f"{project}-{old_version}.dist-info/", f"{project}-{version}.dist-info/"
    target = out_directory / f"{project}-{version}-{tags}.whl"
    records = []
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for entry in source.infolist():
            name = entry.filename
            if name.startswith(old_info):
                name = new_info + name.removeprefix(old_info)
            if name == new_info + "RECORD":
                continue
            data = source.read(entry)
            if name == new_info + "METADATA":
                data = data.replace(f"\nVersion: {old_version}\n".encode(), f"\nVersion: {version}\n".encode(), 1)
            info = copy.copy(entry)  # keeps the file modes (torch ships executables)
            info.filename = info.orig_filename = name
            info.compress_type = zipfile.ZIP_DEFLATED
            out.writestr(info, data)
            records.append(_record_line(name, data))
        records.append(f"{new_info}RECORD,,")
        out.writestr(new_info + "RECORD", "\n".join(records) + "\n")
    return target


if __name__ == "__main__":
    wheel_path, new_version, out = sys.argv[1:4]
    print(relabel(Path(wheel_path), new_version, Path(out)))
