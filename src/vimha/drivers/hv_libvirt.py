"""The libvirt hypervisor driver: one libvirt domain per instance (QEMU, or libvirt's test
driver for the contract suite). Contract: ports/hypervisor.py.

URLs: `libvirt:///system` -> `qemu:///system`; `libvirt+DRIVER://REST` -> `DRIVER://REST`
(`libvirt+test:///default` is libvirt's in-process test driver). Every libvirt call runs on
a worker thread (`asyncio.to_thread`), never on the event loop, and its errors are
translated in one place (`libvirt_support.translate`). Events come from libvirt's event loop
thread (`libvirt_support.ensure_event_loop`) through `call_soon_threadsafe`.

State lives in libvirt and on disk, never only in memory: each domain is persistent
(defined, so a crashed or stopped guest is still listed) and carries its instance id,
incarnation and scope in its metadata (`libvirt_xml`); its files are under
`<state_dir>/<domain name>/`: the kernel and initrd unpacked from the image bundle (or a
qcow2 overlay on the image), `config-2.iso`, `console.log`. All of it is made afresh for
each incarnation. `scope` names the node when several agents share one libvirtd (the
embedded cloud): domains are named `vimha-<scope>-<instance id>` and each agent lists only
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import libvirt

from vimha.domain.errors import Conflict, InvalidInput
from vimha.drivers import libvirt_migration as migration
from vimha.drivers import libvirt_support as support
from vimha.drivers.config_drive import write_iso
from vimha.drivers.libvirt_xml import NAMESPACE, DomainFiles, DomainMeta, domain_xml, parse_meta
from vimha.ports.hypervisor import (
    Capabilities,
    Console,
    GuestEvent,
    GuestEventKind,
    GuestSpec,
    GuestStatus,
    HypervisorUnavailable,
    LiveResult,
    NodeResources,
    WatchdogAction,
)

T = TypeVar("T")
CONSOLE_HISTORY = 64 * 1024
REPEAT_WINDOW = 2.0  # seconds within which a REBOOTED repeats a reset already told
RECONNECT_EVERY = 5.0  # seconds between attempts to reach libvirtd again, for events
DEFAULT_CMDLINE = "console=ttyS0 quiet loglevel=3"


def libvirt_uri(url: str) -> str:
    """The libvirt URI behind a vimha hypervisor URL."""
    if url.startswith("libvirt+"):
        return url.removeprefix("libvirt+")
    if url.startswith("libvirt:"):
        return "qemu:" + url.removeprefix("libvirt:")
    raise InvalidInput(f"not a libvirt URL: {url}")


class LibvirtHypervisor:
    """Hypervisor (ports/hypervisor.py) on libvirt."""

    name = "libvirt"

    def __init__(
        self,
        url: str,
        state_dir: Path,
        scope: str = "",
        domain_type: str | None = None,
        shutdown_grace: float = 10.0,
        migration_uri: str | None = None,
        migration_address: str | None = None,
    ) -> None:
        self.uri = libvirt_uri(url)
        # How the other nodes' libvirtd reach this one (peer to peer live migration), and
        # the address QEMU receives a migration's memory on (issue 19).
        self.migration_uri = migration_uri or self.uri
        self.migration_address = migration_address
        self.state_dir = state_dir
        self.scope = scope
        self.prefix = f"vimha-{scope}-" if scope else "vimha-"
        self._domain_type = domain_type  # None: from the connection ('qemu' or 'test')
        self.shutdown_grace = shutdown_grace
        self.capabilities = Capabilities(
            live_migration=True,
            watchdog_actions=frozenset(WatchdogAction),
            image_formats=frozenset({"kernel+initrd", "qcow2"}),
            live_note="libvirt peer-to-peer live migration",
        )
        self._conn: Any = None
        self._callbacks: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subscribers: list[asyncio.Queue[GuestEvent]] = []
        self._known: dict[str, DomainMeta] = {}  # domain name -> its metadata
        self._stopping: set[str] = set()  # instance ids being stopped through the port
        self._last: dict[str, tuple[GuestEventKind, datetime]] = {}
        self._rebooted: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    # -- connection and calls -------------------------------------------------------------

    def _open(self) -> Any:
        """The connection, opened (again) if needed, with the event callbacks registered.
        Runs on a worker thread."""
        if self._conn is not None:
            return self._conn
        support.ensure_event_loop()
        conn = libvirt.open(self.uri)
        with contextlib.suppress(libvirt.libvirtError):  # the test driver has no keepalive
            conn.setKeepAlive(5, 3)
        conn.registerCloseCallback(self._on_close, None)
        cbs = [
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._cb_lifecycle),
            (libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._cb_watchdog),
            (libvirt.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, self._cb_io_error),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._cb_reboot),
        ]
        self._callbacks = [conn.domainEventRegisterAny(None, ev, cb, None) for ev, cb in cbs]
        if self._domain_type is None:
            self._domain_type = "test" if conn.getType().lower() == "test" else "qemu"
        self._conn = conn
        return conn

    def _on_close(self, _conn: Any, reason: int, _opaque: object) -> None:
        self._conn = None  # the next call opens a new connection

    async def _call(self, fn: Callable[..., T], *args: Any, what: str) -> T:
        """`fn(*args)` on a worker thread, libvirt's errors translated."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()

        def run() -> T:
            try:
                return fn(*args)
            except libvirt.libvirtError as e:
                if support.connection_lost(e):
                    self._conn = None
                raise support.translate(e, what) from e

        return await asyncio.to_thread(run)

    def _lookup(self, instance_id: str) -> Any:
        return self._open().lookupByName(self.prefix + instance_id)

    def _lock(self, instance_id: str) -> asyncio.Lock:
        return self._locks.setdefault(instance_id, asyncio.Lock())

    # -- events -----------------------------------------------------------------------------

    def _hand_over(self, name: str, kind: str, a: int = 0, b: int = 0, text: str = "") -> None:
        """On libvirt's event thread: capture, hand to asyncio."""
        if self._loop is None or not name.startswith(self.prefix):
            return
        at = datetime.now(UTC)
        self._loop.call_soon_threadsafe(self._on_event, name, kind, a, b, text, at)

    def _cb_lifecycle(self, _c: Any, dom: Any, event: int, detail: int, _o: object) -> None:
        self._hand_over(dom.name(), "lifecycle", event, detail)

    def _cb_watchdog(self, _c: Any, dom: Any, action: int, _o: object) -> None:
        self._hand_over(dom.name(), "watchdog", action)

    def _cb_io_error(
        self, _c: Any, dom: Any, path: str, alias: str, action: int, reason: str, _o: object
    ) -> None:
        self._hand_over(dom.name(), "io", action, text=f"{alias} {path}: {reason}")

    def _cb_reboot(self, _c: Any, dom: Any, _o: object) -> None:
        self._hand_over(dom.name(), "reboot")

    def _on_event(self, name: str, kind: str, a: int, b: int, text: str, at: datetime) -> None:
        meta = self._known.get(name)
        if meta is None:  # a guest defined by an earlier agent: read its metadata first
            task = asyncio.ensure_future(self._adopt_then(name, kind, a, b, text, at))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        mapped: tuple[GuestEventKind, str] | None
        if kind == "lifecycle":
            stopping = meta.instance_id in self._stopping
            mapped = support.lifecycle_kind(a, b, stopping)
            if a == libvirt.VIR_DOMAIN_EVENT_STOPPED:
                self._stopping.discard(meta.instance_id)
        elif kind == "watchdog":
            mapped = GuestEventKind.WATCHDOG, support.WATCHDOG_ACTIONS.get(a, str(a))
        elif kind == "io":
            mapped = GuestEventKind.IO_ERROR, text
        else:
            mapped = GuestEventKind.REBOOTED, ""
            flag = self._rebooted.get(meta.instance_id)
            if flag is not None:
                flag.set()
        if mapped is None:
            return
        event_kind, detail = mapped
        if self._redundant(meta.instance_id, event_kind, at):
            return
        self._last[meta.instance_id] = (event_kind, at)
        event = GuestEvent(meta.instance_id, meta.incarnation, event_kind, at, detail)
        for queue in self._subscribers:
            queue.put_nowait(event)

    def _redundant(self, instance_id: str, kind: GuestEventKind, at: datetime) -> bool:
        """An event that only repeats what was told: a panic is told once (libvirt says
        CRASHED, then STOPPED(crashed) as it destroys the domain); a reset is one REBOOTED
        (QEMU reports a reset several times, and a watchdog's reset is its WATCHDOG event);
        RESUMED only after PAUSED (libvirt also says it as a domain starts)."""
        last = self._last.get(instance_id)
        last_kind, last_at = last if last is not None else (None, at)
        if kind == GuestEventKind.RESUMED:
            return last_kind != GuestEventKind.PAUSED
        if kind == GuestEventKind.CRASHED:
            return last_kind == GuestEventKind.CRASHED
        if kind == GuestEventKind.REBOOTED:
            recent = (at - last_at).total_seconds() < REPEAT_WINDOW
            return recent and last_kind in (GuestEventKind.REBOOTED, GuestEventKind.WATCHDOG)
        return False

    async def _adopt_then(
        self, name: str, kind: str, a: int, b: int, text: str, at: datetime
    ) -> None:
        try:
            meta = await self._call(self._meta_of_name, name, what=f"metadata of {name}")
        except Exception:
            return
        if meta is not None and meta.scope == self.scope:
            self._known[name] = meta
            self._on_event(name, kind, a, b, text, at)

    def _meta_of_name(self, name: str) -> DomainMeta | None:
        return self._meta(self._open().lookupByName(name))

    @staticmethod
    def _meta(dom: Any) -> DomainMeta | None:
        try:
            xml = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE, 0)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise
        return parse_meta(xml)

    async def events(self) -> AsyncIterator[GuestEvent]:
        """Events from now on. While libvirtd is away nothing comes (what happened meanwhile
        is for `list_guests` to show); the connection is opened again every few seconds."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GuestEvent] = asyncio.Queue()
        self._subscribers.append(queue)
        try:
            while True:
                if self._conn is None:
                    with contextlib.suppress(HypervisorUnavailable):
                        await self._call(self._open, what="connect")
                try:
                    event = await asyncio.wait_for(queue.get(), RECONNECT_EVERY)
                except TimeoutError:
                    continue
                yield event
        finally:
            self._subscribers.remove(queue)

    # -- guests -----------------------------------------------------------------------------

    def _status(self, dom: Any, meta: DomainMeta) -> GuestStatus:
        state, reason = dom.state()
        guest_state, detail = support.guest_state(state, reason)
        return GuestStatus(
            meta.instance_id, meta.incarnation, guest_state, detail, dom.UUIDString()
        )

    async def resources(self) -> NodeResources:
        def read() -> NodeResources:
            conn = self._open()
            info = conn.getInfo()
            self.state_dir.mkdir(parents=True, exist_ok=True)
            disk = shutil.disk_usage(self.state_dir).total // 2**30
            virt = f"COMPUTE_VIRT_{self._domain_type or 'qemu'}".upper()
            return NodeResources(
                vcpus=int(info[2]),
                ram_mib=int(info[1]),
                disk_gib=int(disk),
                traits=("COMPUTE_HYPERVISOR_LIBVIRT", virt, "HW_WATCHDOG_I6300ESB"),
            )

        return await self._call(read, what="node info")

    async def spawn(self, spec: GuestSpec) -> GuestStatus:
        if spec.image_format not in self.capabilities.image_formats:
            raise InvalidInput(f"image format {spec.image_format!r} not supported by libvirt")
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        async with self._lock(spec.instance_id):
            return await self._call(self._spawn, spec, what=f"spawn {spec.instance_id}")

    def _spawn(self, spec: GuestSpec) -> GuestStatus:
        conn = self._open()
        name = self.prefix + spec.instance_id
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            dom = None
        if dom is not None:
            meta = self._meta(dom)
            if meta is not None and meta.incarnation == spec.incarnation:
                self._known[name] = meta
                if not dom.isActive():
                    dom.create()
                return self._status(dom, meta)
            if meta is not None and meta.incarnation > spec.incarnation:
                raise Conflict(
                    f"{spec.instance_id}: incarnation {meta.incarnation} runs here, "
                    f"not replaced by {spec.incarnation}"
                )
            self._remove(dom, spec.instance_id)  # what is left of a lower incarnation
        files = self._lay_out(spec, self.state_dir / name)
        xml = domain_xml(spec, name, self.scope, files, self._domain_type or "qemu",
                         self._cmdline(files))  # fmt: skip
        meta = DomainMeta(spec.instance_id, spec.incarnation, self.scope, spec.image_id)
        self._known[name] = meta
        self._last.pop(spec.instance_id, None)
        dom = conn.defineXML(xml)
        try:
            dom.create()
        except libvirt.libvirtError:
            dom.undefineFlags(0)
            raise
        return self._status(dom, meta)

    def _cmdline(self, files: DomainFiles) -> str:
        manifest = files.config_drive.parent / "guest.json"
        try:
            return str(json.loads(manifest.read_text()).get("cmdline", DEFAULT_CMDLINE))
        except (OSError, ValueError):
            return DEFAULT_CMDLINE

    def _lay_out(self, spec: GuestSpec, folder: Path) -> DomainFiles:
        """The incarnation's files, made afresh. QEMU runs as libvirt-qemu: libvirt gives it
        the files (dynamic ownership); the folders must let it through."""
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, mode=0o755)
        for d in (self.state_dir, folder):
            d.chmod(0o755)
        image = Path(spec.image_path)
        kernel = initrd = disk = None
        try:
            if spec.image_format == "kernel+initrd":
                with tarfile.open(image) as tar:
                    for member in ("vmlinuz", "initrd.img", "guest.json"):
                        try:
                            tar.extract(member, folder, filter="data")
                        except KeyError as e:
                            if member != "guest.json":
                                raise InvalidInput(f"{image}: no {member} in the bundle") from e
                kernel, initrd = folder / "vmlinuz", folder / "initrd.img"
            else:
                disk = folder / "disk.qcow2"
                subprocess.run(
                    ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                     str(image.resolve()), str(disk), f"{spec.disk_gib}G"],
                    check=True, capture_output=True,
                )  # fmt: skip
            iso = folder / "config-2.iso"
            write_iso(spec.config_drive, iso)
        except (OSError, tarfile.TarError, ValueError, subprocess.CalledProcessError) as e:
            raise InvalidInput(f"{spec.instance_id}: cannot lay out its files: {e}") from e
        for f in folder.iterdir():
            f.chmod(0o644)
        return DomainFiles(iso, folder / "console.log", kernel, initrd, disk)

    def _remove(self, dom: Any, instance_id: str) -> None:
        """Stop and undefine a domain, remove its files."""
        name = dom.name()
        if dom.isActive():
            self._stopping.add(instance_id)
            dom.destroy()
        dom.undefineFlags(0)
        # self._known keeps the name: the STOPPED event of this destroy is still to come.
        shutil.rmtree(self.state_dir / name, ignore_errors=True)

    async def power_off(self, instance_id: str, graceful: bool = True) -> None:
        async with self._lock(instance_id):
            dom = await self._call(self._lookup, instance_id, what=f"power off {instance_id}")
            if not await self._call(dom.isActive, what=f"power off {instance_id}"):
                return
            self._stopping.add(instance_id)
            try:
                if graceful:
                    await self._call(dom.shutdown, what=f"shut down {instance_id}")
                    deadline = time.monotonic() + self.shutdown_grace
                    while time.monotonic() < deadline:
                        if not await self._call(dom.isActive, what=f"power off {instance_id}"):
                            return
                        await asyncio.sleep(0.2)
                await self._call(self._destroy_if_active, dom, what=f"destroy {instance_id}")
            except BaseException:
                self._stopping.discard(instance_id)
                raise

    @staticmethod
    def _destroy_if_active(dom: Any) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as e:
            if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:  # not running
                raise

    async def power_on(self, instance_id: str) -> None:
        async with self._lock(instance_id):
            dom = await self._call(self._lookup, instance_id, what=f"power on {instance_id}")
            if not await self._call(dom.isActive, what=f"power on {instance_id}"):
                self._last.pop(instance_id, None)
                await self._call(dom.create, what=f"power on {instance_id}")

    async def reboot(self, instance_id: str, hard: bool = False) -> None:
        """Hard: a reset. Soft: the ACPI power button, then a reset if the guest did not
        reboot within the shutdown grace."""
        dom = await self._call(self._lookup, instance_id, what=f"reboot {instance_id}")
        if not await self._call(dom.isActive, what=f"reboot {instance_id}"):
            raise Conflict(f"{instance_id} is not running")
        if hard:
            await self._call(dom.reset, 0, what=f"reset {instance_id}")
            return
        flag = self._rebooted[instance_id] = asyncio.Event()
        try:
            await self._call(dom.reboot, 0, what=f"reboot {instance_id}")
            await asyncio.wait_for(flag.wait(), self.shutdown_grace)
        except TimeoutError:
            await self._call(dom.reset, 0, what=f"reset {instance_id}")
        finally:
            self._rebooted.pop(instance_id, None)

    async def pause(self, instance_id: str) -> None:
        dom = await self._call(self._lookup, instance_id, what=f"pause {instance_id}")
        state, _ = await self._call(dom.state, what=f"pause {instance_id}")
        if state != libvirt.VIR_DOMAIN_PAUSED:
            await self._call(dom.suspend, what=f"pause {instance_id}")

    async def unpause(self, instance_id: str) -> None:
        dom = await self._call(self._lookup, instance_id, what=f"unpause {instance_id}")
        state, _ = await self._call(dom.state, what=f"unpause {instance_id}")
        if state == libvirt.VIR_DOMAIN_PAUSED:
            await self._call(dom.resume, what=f"unpause {instance_id}")

    async def destroy(self, instance_id: str) -> None:
        def run() -> None:
            try:
                dom = self._lookup(instance_id)
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                shutil.rmtree(self.state_dir / (self.prefix + instance_id), ignore_errors=True)
                return
            self._remove(dom, instance_id)

        async with self._lock(instance_id):
            await self._call(run, what=f"destroy {instance_id}")

    async def list_guests(self) -> list[GuestStatus]:
        def run() -> list[GuestStatus]:
            found = []
            for dom in self._open().listAllDomains(0):
                name = dom.name()
                if not name.startswith(self.prefix):
                    continue
                try:
                    meta = self._meta(dom)
                    if meta is None or meta.scope != self.scope:
                        continue
                    self._known[name] = meta
                    found.append(self._status(dom, meta))
                except libvirt.libvirtError as e:
                    if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:  # gone meanwhile
                        raise
            return found

        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return await self._call(run, what="list guests")

    async def status(self, instance_id: str) -> GuestStatus:
        """One guest's status (not in the port: a convenience of this driver)."""

        def run() -> GuestStatus:
            dom = self._lookup(instance_id)
            meta = self._meta(dom)
            if meta is None:
                raise libvirt.libvirtError(f"{dom.name()} has no vimha metadata")
            return self._status(dom, meta)

        return await self._call(run, what=f"status of {instance_id}")

    async def console(self, instance_id: str) -> Console:
        loop = asyncio.get_running_loop()
        self._loop = self._loop or loop
        name = self.prefix + instance_id

        def run() -> Any:
            conn = self._open()
            dom = conn.lookupByName(name)
            stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            return stream

        stream = await self._call(run, what=f"console of {instance_id}")
        history = await asyncio.to_thread(
            support.tail, self.state_dir / name / "console.log", CONSOLE_HISTORY
        )
        return support.StreamConsole(stream, history, loop, self._call)

    # -- migration (issue 19): drivers/libvirt_migration.py ---------------------------------
    async def prepare_incoming(self, spec: GuestSpec, live: bool) -> dict[str, str]:
        async with self._lock(spec.instance_id):
            return await self._call(
                migration.prepare, self, spec, live, what=f"prepare {spec.instance_id}"
            )

    async def cancel_incoming(self, instance_id: str) -> None:
        async with self._lock(instance_id):
            await self._call(migration.cancel, self, instance_id, what=f"cancel {instance_id}")

    async def migrate_live(
        self, instance_id: str, target: dict[str, str], max_downtime_ms: int | None, limit: float
    ) -> LiveResult:
        async with self._lock(instance_id):
            return await self._call(
                migration.migrate, self, instance_id, target, max_downtime_ms, limit,
                what=f"migrate {instance_id}",
            )  # fmt: skip

    async def export_guest(self, instance_id: str, out: Path) -> None:
        async with self._lock(instance_id):
            await self._call(migration.export, self, instance_id, out, what=f"export {instance_id}")

    async def import_guest(self, spec: GuestSpec, state: Path) -> GuestStatus:
        async with self._lock(spec.instance_id):
            return await self._call(
                migration.import_, self, spec, state, what=f"import {spec.instance_id}"
            )

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return

        def run() -> None:
            for cb in self._callbacks:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(cb)
            with contextlib.suppress(libvirt.libvirtError):
                conn.unregisterCloseCallback()
                conn.close()

        await asyncio.to_thread(run)
