"""The package builds as `make up` builds it (pip, with build isolation), without a warning
from the build backend: setuptools deprecated the licence as a TOML table (`make up` printed
it three times), and its builds stop accepting it in 2027."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_builds_without_deprecation_warnings(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 0, said[-2000:]
    assert list(tmp_path.glob("vimha-*.whl")), said[-2000:]
    warned = [line for line in said.splitlines() if "deprecat" in line.lower()]
    assert warned == [], "\n".join(warned)
