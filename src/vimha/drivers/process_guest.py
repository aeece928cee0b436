"""The process driver's guests on disk (issue 14): what `state.json` holds of a guest's spec,
/proc readings of its process, and its console (the console log followed, the console FIFO
written), the guest's record in the driver (`Guest`), its process started with the console
as its output, and its disk packed for a migration. Used by `drivers/hv_process.py`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimha.domain.errors import NotFound
from vimha.ports.hypervisor import GuestPort, GuestSpec, GuestWatchdog, WatchdogAction

CONSOLE_HISTORY = 64 * 1024


def proc_start(pid: int) -> str | None:
    """The process's start time, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def mem_total_mib() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return 0


def proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "X"


def spec_to_json(spec: GuestSpec) -> dict[str, Any]:
    return {
        "instance_id": spec.instance_id,
        "name": spec.name,
        "incarnation": spec.incarnation,
        "vcpus": spec.vcpus,
        "ram_mib": spec.ram_mib,
        "disk_gib": spec.disk_gib,
        "image_id": spec.image_id,
        "image_path": spec.image_path,
        "image_format": spec.image_format,
        "ports": [
            {
                "network": p.network,
                "mac": p.mac,
                "ip": p.ip,
                "prefix": p.prefix,
                "gateway": p.gateway,
                "tags": list(p.tags),
                "bridge": p.bridge,
            }
            for p in spec.ports
        ],
        "watchdog": None
        if spec.watchdog is None
        else {"timeout": spec.watchdog.timeout, "action": spec.watchdog.action.value},
        "vnf": spec.vnf,
        "metadata": dict(spec.metadata),
    }


def spec_from_json(d: dict[str, Any]) -> GuestSpec:
    wd = d.get("watchdog")
    return GuestSpec(
        d["instance_id"],
        d["name"],
        d["incarnation"],
        d["vcpus"],
        d["ram_mib"],
        d["disk_gib"],
        d["image_id"],
        d["image_path"],
        d["image_format"],
        tuple(
            GuestPort(
                p["network"],
                p["mac"],
                p["ip"],
                p["prefix"],
                p.get("gateway"),
                tuple(p.get("tags", ())),
                p.get("bridge"),
            )
            for p in d["ports"]
        ),
        {},
        None if wd is None else GuestWatchdog(float(wd["timeout"]), WatchdogAction(wd["action"])),
        d.get("vnf", ""),
        d.get("metadata", {}),
    )


class FileConsole:
    """The console log followed, and the console FIFO written."""

    def __init__(self, home: Path) -> None:
        self.log = home / "console.log"
        self.fifo = home / "console.in"
        size = self.log.stat().st_size if self.log.exists() else 0
        self._pos = size
        with contextlib.suppress(OSError), open(self.log, "rb") as fh:
            fh.seek(max(0, size - CONSOLE_HISTORY))
            self.history = fh.read(size)
        if not hasattr(self, "history"):
            self.history = b""
        self._closed = False

    def _more(self) -> bytes | None:
        try:
            with open(self.log, "rb") as fh:
                fh.seek(self._pos)
                return fh.read(65536)
        except OSError:
            return None

    async def read(self) -> bytes:
        while not self._closed:
            data = self._more()
            if data is None:
                return b""
            if data:
                self._pos += len(data)
                return data
            await asyncio.sleep(0.05)
        return b""

    async def write(self, data: bytes) -> None:
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            raise NotFound(f"console input not open: {exc.strerror}") from None
        try:
            os.write(fd, data)
        except BlockingIOError:
            pass  # the guest does not read its console: input dropped, as a full UART
        finally:
            os.close(fd)

    async def close(self) -> None:
        self._closed = True


def popen_guest(
    home: Path, argv: list[str], stdin: int, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """The guest's process, in a session of its own, its console the log (in the event
    loop, on purpose: a fork and an exec, and its pid is known at once)."""
    with open(home / "console.log", "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home / "disk",
            env=env,
            start_new_session=True,
        )


def in_netns(spec: GuestSpec) -> bool:
    """Whether the guest has a network namespace of its own: its ports have bridges."""
    return any(p.bridge for p in spec.ports)


def pack_disk(disk: Path, out: Path) -> None:
    """The disk folder as a tar (uncompressed: a guest's disk is copied on one machine or a
    fast network; compressing would only lengthen the interruption)."""
    tmp = out.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        for path in sorted(disk.rglob("*")):
            tar.add(path, path.relative_to(disk).as_posix(), recursive=False)
    os.replace(tmp, out)


@dataclass(slots=True)
class Guest:
    spec: GuestSpec
    home: Path
    pid: int | None = None
    started: str = ""  # the process's start time (/proc/<pid>/stat field 22)
    power: str = "running"  # what was asked: running, stopped, paused
    crashed: str = ""  # why it ended, when it ended on its own
    proc: subprocess.Popen[bytes] | None = None
    pidfd: int | None = None
    launched_at: float = 0.0  # wall time of the last start (the watchdog arms after it)
    fired: bool = False  # the watchdog expired and has not been petted since
    stopping: bool = False
    exited: asyncio.Event = field(default_factory=asyncio.Event)  # set when pid is None
