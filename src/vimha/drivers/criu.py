"""Whether CRIU can checkpoint and restore processes on this machine (issue 19), asked once
when the process driver starts: live migration of process guests would need it.

`criu check` is the test: Debian 12's CRIU 3.17 fails it on these machines' 6.x kernels
("Failed to fill self vdso symtable", "Unexpected rt vDSO area bounds"), so process guests
are migrated cold (stopped, their disk copied, started on the destination). Even where the
check passes, vimha does not migrate process guests live yet: that path could not be
verified on a machine where CRIU works; the note says so.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CriuCheck:
    usable: bool
    note: str  # why not, or what was found


@functools.cache
def detect(timeout: float = 15.0) -> CriuCheck:
    """Once per process (every driver object of it shares the answer)."""
    criu = shutil.which("criu") or shutil.which("criu", path="/usr/sbin:/sbin")
    if criu is None:
        return CriuCheck(False, "criu is not installed")
    try:
        done = subprocess.run(
            [criu, "check"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CriuCheck(False, f"criu check did not run: {exc}")
    if done.returncode != 0:
        lines = [x.strip() for x in (done.stderr + done.stdout).splitlines() if x.strip()]
        errors = [x for x in lines if x.startswith("Error")] or lines
        first = errors[0] if errors else f"exit status {done.returncode}"
        return CriuCheck(False, f"criu check failed: {first}")
    return CriuCheck(True, "criu check passed")
