"""A config drive as an ISO 9660 volume labelled `config-2` (OpenStack's layout, what
cloud-init and the demo guest look for), built in pure Python with pycdlib.

The files keep their names through Rock Ridge (what Linux reads); the ISO 9660 names under
them are generated (F0001, D0001: level 3, unique per directory). No Joliet: Linux prefers
Rock Ridge, and Joliet would need the guest's NLS modules.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import pycdlib

LABEL = "config-2"


def _check(path: str) -> PurePosixPath:
    p = PurePosixPath(path)
    if p.is_absolute() or not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ValueError(f"config drive path {path!r} must be relative, without . or ..")
    return p


def write_iso(files: Mapping[str, bytes], dest: Path, label: str = LABEL) -> None:
    """Write `files` (path inside the drive -> content) as an ISO 9660 image at `dest`."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09", vol_ident=label)
    dirs: dict[PurePosixPath, str] = {PurePosixPath("."): ""}
    counter = 0

    def iso_dir(d: PurePosixPath) -> str:
        nonlocal counter
        if d not in dirs:
            parent = iso_dir(d.parent)
            counter += 1
            dirs[d] = f"{parent}/D{counter:04d}"
            iso.add_directory(dirs[d], rr_name=d.name)
        return dirs[d]

    try:
        for path in sorted(files):
            p = _check(path)
            data = files[path]
            counter += 1
            name = f"{iso_dir(p.parent)}/F{counter:04d}.;1"
            iso.add_fp(io.BytesIO(data), len(data), name, rr_name=p.name)
        tmp = dest.with_name(dest.name + ".tmp")
        iso.write(str(tmp))
        tmp.replace(dest)
    finally:
        iso.close()
