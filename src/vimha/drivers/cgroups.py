"""CPU and memory bounds of a process guest, with cgroups: v2 where it has the memory and
cpu controllers, else v1 (these machines mount v1 memory and cpu; v2 has no controllers).
Detected once at start; without either (not root) guests run unbounded and the driver says
so. A process joins its group by writing its own pid before it execs (`enter_argv`)."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("vimha.cgroups")
ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


@dataclass(frozen=True, slots=True)
class Cgroups:
    """`version` 1 or 2 (0: none usable); `base` the folder of vimha's groups in each
    hierarchy (one for v2, memory and cpu for v1)."""

    version: int
    memory: Path | None = None
    cpu: Path | None = None

    @property
    def usable(self) -> bool:
        return self.version > 0

    def create(self, name: str, vcpus: int, ram_mib: int) -> list[Path]:
        """The guest's group(s) with its bounds; returns their cgroup.procs files."""
        if not self.usable:
            return []
        limit = ram_mib * 2**20
        quota = vcpus * PERIOD_US
        if self.version == 2:
            assert self.memory is not None
            group = self.memory / name
            group.mkdir(parents=True, exist_ok=True)
            (group / "memory.max").write_text(f"{limit}\n")
            (group / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
            return [group / "cgroup.procs"]
        assert self.memory is not None and self.cpu is not None
        mem = self.memory / name
        cpu = self.cpu / name
        mem.mkdir(parents=True, exist_ok=True)
        cpu.mkdir(parents=True, exist_ok=True)
        (mem / "memory.limit_in_bytes").write_text(f"{limit}\n")
        (cpu / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
        (cpu / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        return [mem / "cgroup.procs", cpu / "cgroup.procs"]

    def remove(self, name: str) -> None:
        for base in {self.memory, self.cpu}:
            if base is not None:
                with contextlib.suppress(OSError):
                    (base / name).rmdir()

    def members(self, name: str) -> list[int]:
        if self.memory is None:
            return []
        try:
            text = (self.memory / name / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(x) for x in text.split()]


def detect(prefix: str, root: Path = ROOT) -> Cgroups:
    """Where vimha's guest groups go (`prefix`, e.g. vimha/cmp-1), and which version."""
    v2 = root / "cgroup.controllers"
    if v2.exists() and {"memory", "cpu"} <= set(v2.read_text().split()):
        base = root / prefix
        if _writable(base, root / "cgroup.subtree_control", ("+memory", "+cpu")):
            return Cgroups(2, base, base)
    mem, cpu = root / "memory", root / "cpu"
    v1 = (mem / "cgroup.procs").exists() and (cpu / "cgroup.procs").exists()
    if v1 and _writable(mem / prefix) and _writable(cpu / prefix):
        return Cgroups(1, mem / prefix, cpu / prefix)
    log.warning(
        "no usable cgroup (v1 memory+cpu or v2 with both controllers): guests run "
        "without CPU and memory bounds"
    )
    return Cgroups(0)


def _writable(base: Path, control: Path | None = None, enable: tuple[str, ...] = ()) -> bool:
    try:
        if control is not None:
            for what in enable:
                control.write_text(what)
        base.mkdir(parents=True, exist_ok=True)
        return os.access(base, os.W_OK)
    except OSError:
        return False


def enter_argv(procs: list[Path], argv: list[str]) -> list[str]:
    """`argv` run by a shell that first moves itself into the groups (then execs)."""
    if not procs:
        return argv
    script = (
        'for f in "$@"; do [ "$f" = -- ] && break; echo $$ > "$f"; shift; done; shift; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "sh", *[str(p) for p in procs], "--", *argv]
