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
# what a member's server (PostgreSQL, MariaDB, HAProxy, keepalived, ...) says of a failure
MEMBER_NOTABLE = re.compile(
    r"FATAL|PANIC|ALERT|\[ERROR\]|timeline|could not|Server .* is (DOWN|UP)"
)
STAMP = re.compile(r"^\S+ \d\d:\d\d:\d\d[.,]\d+\s+")


def _printed(kept: Path, log: Path) -> re.Pattern[str] | None:
    """Which lines of a kept log the digest prints: vimha's own logs (agents, controllers)
    and the members' (`run/<group>.log`); the servers' other logs are too long."""
    if log.name.endswith("-etcd.log"):
        return None
    if log.parent in (kept, kept / "logs") or log.name == "controller.log":
        return NOTABLE
    if log.parent.name == "run" or log.name == "error.log":  # MariaDB's is its own
        return MEMBER_NOTABLE
    return None


def digest(kept: Path, per_log: int = 12) -> str:
    """The notable lines (roles taken and given up, fencing, leases, stalls, errors; what
    the members' servers said of failures) of the logs kept in `kept`, the last `per_log`
    distinct ones of each (a repeated line once, with its count): what CI prints of a
    failure whose logs stay on its machine."""
    out = []
    for log in sorted(kept.rglob("*.log")):
        pattern = _printed(kept, log)
        if pattern is None:
            continue
        with contextlib.suppress(OSError):
            counts: dict[str, int] = {}
            last: dict[str, str] = {}
            for line in log.read_text(errors="replace").splitlines():
                if pattern.search(line) and not ROUTINE.search(line):
                    key = STAMP.sub("", line)
                    counts[key] = counts.get(key, 0) + 1
                    last.pop(key, None)  # ordered by their last occurrence
                    last[key] = line
            if last:
                out.append(f"--- {log.relative_to(kept)}")
                for key, line in list(last.items())[-per_log:]:
                    times = f" (x{counts[key]})" if counts[key] > 1 else ""
                    out.append(line[:240] + times)
    return "\n".join(out)
