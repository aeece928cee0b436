"""Helpers for tests that run processes of their own."""

from __future__ import annotations

import subprocess
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
