"""Helpers for tests that run processes of their own."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path


def stop_all(procs: Iterable[subprocess.Popen[bytes]], grace: float = 10) -> None:
    """SIGTERM every process, then wait for each, killing those that outlive `grace`."""
    procs = list(procs)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def alive(pid: int) -> bool:
    """Running (a zombie or a dead process is not: `kill -0` would say it is)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def keep_logs(base: Path, prefix: str = "vimha-kept-") -> Path:
    """A copy of every log under `base` (agents, controllers, servers), kept after the test
    removes it: for a failure that is rare (the test's message names the copy)."""
    kept = Path(tempfile.mkdtemp(prefix=prefix))
    for log in base.rglob("*.log"):
        with contextlib.suppress(OSError):
            if log.is_file() and log.stat().st_size < 50_000_000:
                target = kept / log.relative_to(base)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(log, target)
    return kept


NOTABLE = re.compile(r"resign|fenc|lease|late|promot|active in slot|ERROR|Traceback")
ROUTINE = re.compile(r"could not start the member")  # a member waiting for its cluster


def digest(kept: Path, per_log: int = 12) -> str:
    """The notable lines (roles taken and given up, fencing, leases, stalls, errors) of the
    vimha logs kept in `kept`, the last `per_log` of each: what CI prints of a failure
    whose logs stay on its machine."""
    out = []
    for log in sorted(kept.rglob("*.log")):
        if log.parent not in (kept, kept / "logs"):
            continue  # the servers' own logs: too long to print
        with contextlib.suppress(OSError):
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if NOTABLE.search(line) and not ROUTINE.search(line)]  # fmt: skip
            if lines:
                out.append(f"--- {log.relative_to(kept)}")
                out += [line[:240] for line in lines[-per_log:]]
    return "\n".join(out)
