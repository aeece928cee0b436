"""The `process://` hypervisor (issue 14): a guest is a program the agent starts.

Each guest has a folder `<base>/<instance id>/`: `disk/` (a fresh copy of the image, a tar
with `manifest.json` naming the command), `config-2/` (its config drive, OpenStack layout),
`console.log` (stdout and stderr), `console.in` (a FIFO: its stdin), `watchdog` (the device
it pets by writing to it) and `state.json` (what an agent started later needs to adopt it:
pid, its start time, incarnation, the power state asked for, the spec).

- Guests run in sessions of their own and outlive the agent: an agent restarted finds them
  in `state.json` (pid and start time must both match: a pid can be reused) and adopts them.
- Death is seen at once through a pidfd (a zombie counts as dead: `kill -0` would not
  tell). Stopped through the port: STOPPED; otherwise DIED (exit 0) or CRASHED.
- CPU and memory are bounded with cgroups (drivers/cgroups.py), the watchdog is a file whose
  modification time the driver watches; expiry runs the action (reset: killed and started
  again on its disk; poweroff; pause: SIGSTOP; none: reported only). It arms at the guest's
  first pet, as a real i6300esb arms when the guest's driver opens it.
- Ports: loopback addresses (127.0.0.0/8 is all local) when they have no bridge; when they
  have one (`--netns`), a network namespace of the guest's own with a veth pair per port
  (drivers/guest_netns.py): made at every start (a reset, a start after a stop, a restart
  in place make it again, identically), gone with the guest. An agent restarted finds it
  as /proc/<pid>/ns/net (`guest_netns`), which the agent's health probes connect from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from vimha.domain.errors import Conflict, InvalidInput, NotFound
from vimha.drivers import cgroups, criu, guest_netns
from vimha.drivers.process_guest import (
    FileConsole,
    Guest,
    in_netns,
    mem_total_mib,
    pack_disk,
    popen_guest,
    proc_start,
    proc_state,
    spec_from_json,
    spec_to_json,
)
from vimha.ports.hypervisor import (
    Capabilities,
    Console,
    GuestEvent,
    GuestEventKind,
    GuestSpec,
    GuestState,
    GuestStatus,
    HypervisorUnavailable,
    LiveResult,
    NodeResources,
    WatchdogAction,
)

log = logging.getLogger("vimha.hv_process")
STOP_GRACE = 3.0
FAULT_SIGNALS = frozenset(
    {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGSYS}
)
WATCH_EVERY = 0.1
CONSOLE_HISTORY = 64 * 1024


class ProcessHypervisor:
    name = "process"

    def __init__(
        self,
        base: Path,
        node: str = "node",
        python: str = sys.executable,
        use_cgroups: bool = True,
        check_criu: bool = True,
    ) -> None:
        # Live migration would need CRIU: asked once, at start (issue 19).
        found = criu.detect() if check_criu else criu.CriuCheck(False, "not checked")
        note = found.note if not found.usable else f"{found.note}; not used yet: migrated cold"
        self.capabilities = Capabilities(
            live_migration=False,
            watchdog_actions=frozenset(WatchdogAction),
            image_formats=frozenset({"tar"}),
            live_note=note,
        )
        self.base = base
        self.node = node
        self.python = python
        self.base.mkdir(parents=True, exist_ok=True)
        # The node's groups are named after the node and its guests' folder: two clouds on
        # one machine may have nodes of the same name.
        scope = hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:8]
        self.cgroups = (
            cgroups.detect(f"vimha/{node}-{scope}") if use_cgroups else cgroups.Cgroups(0)
        )
        self.guests: dict[str, Guest] = {}
        self._events: asyncio.Queue[GuestEvent] = asyncio.Queue()
        self._watcher: asyncio.Task[None] | None = None
        self._adopted = False

    # -- the port -----------------------------------------------------------------------
    async def resources(self) -> NodeResources:
        mem = mem_total_mib()
        disk = shutil.disk_usage(self.base)
        traits = ["HYPERVISOR_PROCESS", "HW_WATCHDOG"]
        if self.cgroups.usable:
            traits.append(f"CGROUP_V{self.cgroups.version}")
        return NodeResources(os.cpu_count() or 1, mem, disk.free >> 30, tuple(traits))

    async def list_guests(self) -> list[GuestStatus]:
        await self._adopt()
        return [self._status(g) for g in self.guests.values()]

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        await self._adopt()
        old = self.guests.get(spec.instance_id)
        if old is not None:
            if old.spec.incarnation == spec.incarnation:
                return self._status(old)
            if old.spec.incarnation > spec.incarnation:
                raise InvalidInput(
                    f"{spec.name}: incarnation {spec.incarnation} is older than the guest's "
                    f"{old.spec.incarnation}"
                )
            await self.destroy(spec.instance_id)
        if spec.image_format != "tar":
            raise InvalidInput(
                f"{spec.name}: the process driver runs tar images, not {spec.image_format}"
            )
        if in_netns(spec) and (why := guest_netns.available()) is not None:
            raise InvalidInput(f"{spec.name}: its ports have bridges, but {why}")
        home = self.base / spec.instance_id
        guest = Guest(spec, home)
        await asyncio.to_thread(self._lay_out, guest)
        self.guests[spec.instance_id] = guest
        try:
            await self._launch(guest)
        except HypervisorUnavailable:
            self.guests.pop(spec.instance_id, None)  # spawned again from scratch when retried
            await asyncio.to_thread(shutil.rmtree, home, True)
            raise
        self._emit(guest, GuestEventKind.STARTED, f"pid {guest.pid}")
        return self._status(guest)

    async def power_off(self, instance_id: str, graceful: bool = True) -> None:
        guest = self._get(instance_id)
        guest.power = "stopped"
        self._save(guest)  # first: any other driver object sees a stop, not a death
        await self._kill(guest, graceful)
        self._save(guest)

    async def power_on(self, instance_id: str) -> None:
        guest = self._get(instance_id)
        guest.power = "running"
        if guest.pid is None:
            guest.crashed = ""
            if await self._relaunch(guest):
                self._emit(guest, GuestEventKind.STARTED, f"pid {guest.pid}")
        elif proc_state(guest.pid) == "T":
            os.kill(guest.pid, signal.SIGCONT)
        self._save(guest)

    async def reboot(self, instance_id: str, hard: bool = False) -> None:
        guest = self._get(instance_id)
        await self._kill(guest, graceful=not hard)
        guest.power = "running"
        guest.crashed = ""
        if await self._relaunch(guest):
            self._emit(guest, GuestEventKind.REBOOTED, "hard" if hard else "soft")

    async def pause(self, instance_id: str) -> None:
        guest = self._get(instance_id)
        if guest.pid is None:
            raise InvalidInput(f"{guest.spec.name} is not running")
        os.kill(guest.pid, signal.SIGSTOP)
        guest.power = "paused"
        self._save(guest)
        self._emit(guest, GuestEventKind.PAUSED)

    async def unpause(self, instance_id: str) -> None:
        guest = self._get(instance_id)
        if guest.pid is not None:
            os.kill(guest.pid, signal.SIGCONT)
        guest.power = "running"
        guest.fired = False
        guest.launched_at = time.time()  # the watchdog re-arms at the next pet
        self._save(guest)
        self._emit(guest, GuestEventKind.RESUMED)

    async def destroy(self, instance_id: str) -> None:
        await self._adopt()
        guest = self.guests.pop(instance_id, None)
        if guest is None:
            home = self.base / instance_id
            if home.exists():
                await asyncio.to_thread(shutil.rmtree, home, True)
            return
        await self._kill(guest, graceful=False)
        self.cgroups.remove(instance_id)
        if in_netns(guest.spec):
            await asyncio.to_thread(guest_netns.unplug, guest.spec.ports)
        await asyncio.to_thread(shutil.rmtree, guest.home, True)

    # -- migration (issue 19): stop, copy, start --------------------------------------------
    async def prepare_incoming(self, spec: GuestSpec, live: bool) -> dict[str, str]:
        if live:
            raise Conflict(f"no live migration of process guests: {self.capabilities.live_note}")
        if spec.image_format != "tar":
            raise InvalidInput(f"{spec.name}: the process driver runs tar images")
        return {"node": self.node}

    async def cancel_incoming(self, instance_id: str) -> None:
        await self._adopt()
        if instance_id not in self.guests:
            await asyncio.to_thread(shutil.rmtree, self.base / instance_id, True)

    async def migrate_live(
        self, instance_id: str, target: dict[str, str], max_downtime_ms: int | None, limit: float
    ) -> LiveResult:
        raise Conflict(f"no live migration of process guests: {self.capabilities.live_note}")

    async def export_guest(self, instance_id: str, out: Path) -> None:
        """Stopped (SIGTERM, then SIGKILL), its disk written to `out` as a tar."""
        await self._adopt()
        guest = self._get(instance_id)
        if guest.pid is not None:
            guest.power = "stopped"
            self._save(guest)  # first: any other driver object sees a stop, not a death
            await self._kill(guest, graceful=True)
            self._save(guest)
        await asyncio.to_thread(pack_disk, guest.home / "disk", out)

    async def import_guest(self, spec: GuestSpec, state: Path) -> GuestStatus:
        await self._adopt()
        old = self.guests.get(spec.instance_id)
        if old is not None:
            if old.spec.incarnation == spec.incarnation and old.pid is not None:
                return self._status(old)
            await self.destroy(spec.instance_id)
        guest = Guest(spec, self.base / spec.instance_id)
        if in_netns(spec) and (why := guest_netns.available()) is not None:
            raise InvalidInput(f"{spec.name}: its ports have bridges, but {why}")
        await asyncio.to_thread(self._lay_out, guest, state)
        self.guests[spec.instance_id] = guest
        try:
            await self._launch(guest)
        except HypervisorUnavailable:
            self.guests.pop(spec.instance_id, None)  # imported again from scratch when retried
            raise
        self._emit(guest, GuestEventKind.STARTED, f"pid {guest.pid} (migrated)")
        return self._status(guest)

    async def events(self) -> AsyncIterator[GuestEvent]:
        while True:
            yield await self._events.get()

    async def console(self, instance_id: str) -> Console:
        guest = self._get(instance_id)
        return FileConsole(guest.home)

    def guest_netns(self, instance_id: str) -> str | None:
        """The network namespace of a running guest whose ports have bridges (a path to
        setns(2) into), else None: its ports are the node's own addresses."""
        guest = self.guests.get(instance_id)
        if guest is None or guest.pid is None or not in_netns(guest.spec):
            return None
        return guest_netns.netns_of(guest.pid)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        self.cgroups.remove("")  # the node's folder, once no guest group is left in it
        loop = asyncio.get_running_loop()
        for guest in self.guests.values():
            if guest.pidfd is not None:
                loop.remove_reader(guest.pidfd)
                os.close(guest.pidfd)
                guest.pidfd = None

    # -- inside -------------------------------------------------------------------------
    def _get(self, instance_id: str) -> Guest:
        guest = self.guests.get(instance_id)
        if guest is None:
            raise NotFound(f"no guest {instance_id} on this node")
        return guest

    def _status(self, g: Guest) -> GuestStatus:
        if g.pid is not None:
            paused = g.power == "paused" or proc_state(g.pid) == "T"  # SIGSTOP lands later
            state = GuestState.PAUSED if paused else GuestState.RUNNING
        elif g.power == "stopped" or (not g.crashed and g.power != "running"):
            state = GuestState.SHUTOFF
        else:
            state = GuestState.CRASHED if g.crashed else GuestState.SHUTOFF
        return GuestStatus(
            g.spec.instance_id, g.spec.incarnation, state, g.crashed, str(g.pid or "")
        )

    def _emit(self, g: Guest, kind: GuestEventKind, detail: str = "") -> None:
        self._events.put_nowait(
            GuestEvent(g.spec.instance_id, g.spec.incarnation, kind, datetime.now(UTC), detail)
        )

    def _lay_out(self, g: Guest, disk_from: Path | None = None) -> None:
        """A fresh disk from the image (or the disk a cold migration brought), the config
        drive, the console and watchdog files."""
        if g.home.exists():
            shutil.rmtree(g.home)
        disk = g.home / "disk"
        disk.mkdir(parents=True)
        try:
            with tarfile.open(disk_from or g.spec.image_path) as tar:
                tar.extractall(disk, filter="data")
        except (OSError, tarfile.TarError) as exc:
            raise HypervisorUnavailable(f"{g.spec.name}: image not unpacked: {exc}") from None
        drive = g.home / "config-2"
        for rel, data in g.spec.config_drive.items():
            path = drive / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        os.mkfifo(g.home / "console.in", 0o600)
        (g.home / "console.log").touch()
        (g.home / "watchdog").touch()

    def _argv(self, g: Guest) -> list[str]:
        disk = g.home / "disk"
        try:
            manifest = json.loads((disk / "manifest.json").read_text())
            command = [str(x) for x in manifest["command"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise InvalidInput(f"{g.spec.name}: the image has no manifest.json command") from None
        return [c.replace("{python}", self.python).replace("{disk}", str(disk)) for c in command]

    async def _launch(self, g: Guest) -> None:
        """Start the guest on its disk; in netns mode, its ports first (behind the gate).
        Its pid is watched once it runs its own program (or at once, without ports to make).
        HypervisorUnavailable when it could not be started: nothing of it is left running."""
        spec = g.spec
        procs = self.cgroups.create(spec.instance_id, spec.vcpus, spec.ram_mib)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "VIMHA_CONFIG_DRIVE": str(g.home / "config-2"),
            "VIMHA_NICS": ";".join(f"{p.mac},{p.ip},{p.network}" for p in spec.ports),
            "VIMHA_INCARNATION": str(spec.incarnation),
            "VIMHA_INSTANCE": spec.instance_id,
            "VIMHA_NODE": self.node,
            "VIMHA_HOME": str(g.home.resolve()),
        }
        if spec.watchdog is not None:
            env["VIMHA_WATCHDOG"] = str(g.home / "watchdog")
        argv = cgroups.enter_argv(procs, self._argv(g))
        gate = None
        if in_netns(spec):
            stdin, gate = os.pipe()
            argv = guest_netns.gate_argv(g.home / "console.in", argv)
        else:
            stdin = os.open(g.home / "console.in", os.O_RDWR)
        try:
            g.proc = popen_guest(g.home, argv, stdin, env)
        except OSError as exc:
            if gate is not None:
                os.close(gate)
            raise HypervisorUnavailable(f"{spec.name}: not started: {exc}") from None
        finally:
            os.close(stdin)
        if gate is not None:
            await self._plug(g, g.proc, gate)
        g.pid = g.proc.pid
        g.exited.clear()
        g.started = proc_start(g.pid) or ""
        g.launched_at = time.time()
        g.fired = False
        g.stopping = False
        self._watch_pid(g)
        self._save(g)

    async def _relaunch(self, g: Guest) -> bool:
        """Start the guest again on its disk; one that cannot be is a guest that crashed
        (CRASHED, with why): the controller's recovery policy decides what comes next."""
        try:
            await self._launch(g)
        except HypervisorUnavailable as exc:
            log.error("guest %s not started again: %s", g.spec.name, exc.detail)
            g.crashed = exc.detail
            self._save(g)
            self._emit(g, GuestEventKind.CRASHED, exc.detail)
            return False
        return True

    async def _plug(self, g: Guest, proc: subprocess.Popen[bytes], gate: int) -> None:
        """The guest's ports in its new namespace, then its gate opened; or it is killed."""
        try:
            await guest_netns.wait_unshared(proc)
            await guest_netns.plumb(proc.pid, g.spec.ports)
            os.write(gate, guest_netns.GO)
        except (HypervisorUnavailable, OSError) as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.to_thread(proc.wait)
            await asyncio.to_thread(guest_netns.unplug, g.spec.ports)
            g.proc = None
            detail = exc.detail if isinstance(exc, HypervisorUnavailable) else str(exc)
            raise HypervisorUnavailable(f"{g.spec.name}: ports not made: {detail}") from None
        finally:
            os.close(gate)

    def _watch_pid(self, g: Guest) -> None:
        assert g.pid is not None
        try:
            fd = os.pidfd_open(g.pid)
        except ProcessLookupError:
            self._ended(g, None)
            return
        g.pidfd = fd
        asyncio.get_running_loop().add_reader(fd, self._on_exit, g, fd)

    def _on_exit(self, g: Guest, fd: int) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(fd)
        os.close(fd)
        if g.pidfd == fd:
            g.pidfd = None
        status = None
        if g.proc is not None and g.proc.pid == g.pid:
            status = g.proc.wait()
        self._ended(g, status)

    def _ended(self, g: Guest, status: int | None) -> None:
        g.pid = None
        g.proc = None
        g.exited.set()
        if not g.stopping and self._stopped_on_disk(g):
            g.stopping = True  # another driver object (a newer agent) stopped it
            g.power = "stopped"
        if g.stopping:
            g.stopping = False
            self._emit(g, GuestEventKind.STOPPED)
        elif status == 0:
            g.power = "stopped"
            g.crashed = ""
            self._emit(g, GuestEventKind.DIED, "shut down by itself (exit 0)")
        else:
            # The guest's own fault (a fatal signal it raised, a non-zero exit): CRASHED;
            # killed from outside (SIGKILL, SIGTERM) or an end seen without a status: DIED.
            if status is None:
                why, kind = "ended (not a child of this agent: no exit status)", GuestEventKind.DIED
            elif status < 0:
                sig = signal.Signals(-status)
                kind = GuestEventKind.CRASHED if sig in FAULT_SIGNALS else GuestEventKind.DIED
                why = f"killed by {sig.name}"
            else:
                why, kind = f"exited with {status}", GuestEventKind.CRASHED
            g.crashed = why
            self._emit(g, kind, why)
        self._save(g)

    def _stopped_on_disk(self, g: Guest) -> bool:
        try:
            return bool(json.loads((g.home / "state.json").read_text()).get("power") == "stopped")
        except (OSError, ValueError):
            return False

    async def _kill(self, g: Guest, graceful: bool) -> None:
        pid = g.pid
        if pid is None:
            return
        g.stopping = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM if graceful else signal.SIGKILL)
        try:
            await asyncio.wait_for(g.exited.wait(), STOP_GRACE if graceful else 2.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await g.exited.wait()
        for stray in self.cgroups.members(g.spec.instance_id):  # what it forked
            with contextlib.suppress(ProcessLookupError):
                os.kill(stray, signal.SIGKILL)

    def _save(self, g: Guest) -> None:
        state = {
            "pid": g.pid,
            "started": g.started,
            "power": g.power,
            "crashed": g.crashed,
            "spec": spec_to_json(g.spec),
        }
        tmp = g.home / "state.json.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.write_text(json.dumps(state))
            os.replace(tmp, g.home / "state.json")

    async def _adopt(self) -> None:
        """Once per driver: take over the guests an earlier agent process started."""
        if self._adopted:
            return
        self._adopted = True
        for home in sorted(self.base.iterdir()):
            if home.name in self.guests or not (home / "state.json").exists():
                continue
            try:
                state = json.loads((home / "state.json").read_text())
                spec = spec_from_json(state["spec"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("guest folder %s not adopted: %s", home, exc)
                continue
            g = Guest(
                spec, home, power=state.get("power", "running"), crashed=state.get("crashed", "")
            )
            pid = state.get("pid")
            if pid and proc_start(pid) == state.get("started"):
                g.pid = pid
                g.exited.clear()
                g.started = state["started"]
                g.launched_at = time.time()
                self._watch_pid(g)
                log.info("adopted guest %s (pid %d)", spec.name, pid)
            elif pid:
                g.crashed = "ended while no agent watched it"
                log.warning("guest %s ended while no agent watched it", spec.name)
            self.guests[spec.instance_id] = g
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watchdogs())

    async def start(self) -> None:
        """Adopt what runs and start watching the watchdogs."""
        await self._adopt()

    async def _watchdogs(self) -> None:
        while True:
            try:
                await self._watch_round()
            except Exception:  # one guest's failed action must not end the watching
                log.exception("watchdog round failed")
            await asyncio.sleep(WATCH_EVERY)

    async def _watch_round(self) -> None:
        now = time.time()
        for g in list(self.guests.values()):
            wd = g.spec.watchdog
            if wd is None or g.pid is None or g.power != "running":
                continue
            try:
                petted = (g.home / "watchdog").stat().st_mtime
            except OSError:
                continue
            if petted < g.launched_at:
                continue  # not armed yet
            if now - petted < wd.timeout:
                g.fired = False
                continue
            if g.fired:
                continue
            g.fired = True
            await self._expire(g, wd.action, now - petted)

    async def _expire(self, g: Guest, action: WatchdogAction, silent: float) -> None:
        detail = f"no pet for {silent:.1f}s: {action.value}"
        log.warning("watchdog of %s expired: %s", g.spec.name, detail)
        # told first: the start of a reset comes after it (and ends its alarm)
        self._emit(g, GuestEventKind.WATCHDOG, detail)
        if action is WatchdogAction.RESET:
            await self._kill(g, graceful=False)
            g.power = "running"
            if await self._relaunch(g):
                self._emit(g, GuestEventKind.STARTED, f"pid {g.pid} (watchdog reset)")
        elif action is WatchdogAction.POWEROFF:
            g.power = "stopped"
            await self._kill(g, graceful=False)
            self._save(g)
        elif action is WatchdogAction.PAUSE and g.pid is not None:
            os.kill(g.pid, signal.SIGSTOP)
            g.power = "paused"
            self._save(g)
