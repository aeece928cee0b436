"""Helpers for tests that run processes of their own."""

from __future__ import annotations

import contextlib
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
