"""Migration with the libvirt driver (issue 19), for `drivers/hv_libvirt.py`.

Live: libvirt's peer-to-peer live migration (`migrateToURI3` with VIR_MIGRATE_LIVE |
PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE): the source's libvirtd reaches the
destination's (`target["uri"]`, as the destination's agent said its peers reach it) and QEMU
streams the memory over `target["migrateUri"]`. The destination's agent prepared the
domain's files under its own folder and its definition (`target["xml"]`: its own name,
scope and paths); the source hands it to libvirt with the running domain's name and UUID
(libvirt checks both) and the destination's name as the name there, so the guest lands as
the destination's own domain and that agent adopts it. The maximum downtime is the
instance's tolerated interruption (`migrateSetMaxDowntime`): QEMU iterates until what is
left to copy fits it. A migration that does not complete within `limit` seconds is aborted
(`abortJob`): the guest still runs on the source. The downtime libvirt measured is read
from the destination's completed job.

Cold: the domain is stopped and what must move is written as a tar (a qcow2 overlay; a
kernel+initrd guest has no writable disk, its tar is empty); the destination lays the guest
out from its image and that tar and starts it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from vimha.domain.errors import Conflict
from vimha.drivers.libvirt_xml import DomainMeta, domain_xml, migration_xml
from vimha.ports.hypervisor import GuestSpec, GuestStatus, LiveResult

if TYPE_CHECKING:
    from vimha.drivers.hv_libvirt import LibvirtHypervisor

FLAGS = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PEER2PEER
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
)


def prepare(hv: LibvirtHypervisor, spec: GuestSpec, live: bool) -> dict[str, str]:
    """On a worker thread: the incoming guest's files and definition, here."""
    hv._open()
    name = hv.prefix + spec.instance_id
    try:
        hv._open().lookupByName(name)
        raise Conflict(f"{spec.instance_id}: a domain {name} exists here already")
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    files = hv._lay_out(spec, hv.state_dir / name)
    xml = domain_xml(spec, name, hv.scope, files, hv._domain_type or "qemu", hv._cmdline(files))
    target = {"uri": hv.migration_uri, "name": name, "xml": xml}
    if hv.migration_address:
        target["migrateUri"] = f"tcp://{hv.migration_address}"
    if files.disk is not None:
        target["storage"] = "copy"
    return target


def cancel(hv: LibvirtHypervisor, instance_id: str) -> None:
    name = hv.prefix + instance_id
    try:
        hv._open().lookupByName(name)
        return  # a domain landed or runs here: not ours to undo
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
    shutil.rmtree(hv.state_dir / name, ignore_errors=True)


def migrate(
    hv: LibvirtHypervisor,
    instance_id: str,
    target: dict[str, str],
    max_downtime_ms: int | None,
    limit: float,
) -> LiveResult:
    """On a worker thread: the live migration, aborted after `limit` seconds."""
    dom = hv._lookup(instance_id)
    source_name = dom.name()
    params: dict[str, Any] = {
        libvirt.VIR_MIGRATE_PARAM_DEST_XML: migration_xml(
            target["xml"], source_name, dom.UUIDString()
        ),
        libvirt.VIR_MIGRATE_PARAM_DEST_NAME: target["name"],
    }
    if target.get("migrateUri"):
        params[libvirt.VIR_MIGRATE_PARAM_URI] = target["migrateUri"]
    flags = FLAGS
    if target.get("storage") == "copy":
        flags |= libvirt.VIR_MIGRATE_NON_SHARED_INC
    if max_downtime_ms is not None:
        with contextlib.suppress(libvirt.libvirtError):  # set again once the job runs
            dom.migrateSetMaxDowntime(max(1, int(max_downtime_ms)), 0)
    aborted = threading.Event()

    def abort() -> None:
        aborted.set()
        with contextlib.suppress(libvirt.libvirtError):
            dom.abortJob()

    def downtime_once_running() -> None:
        # QEMU takes the limit as a migration parameter; once the job runs it surely holds.
        for _ in range(50):
            if aborted.wait(0.02):
                return
            with contextlib.suppress(libvirt.libvirtError):
                if dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
                    dom.migrateSetMaxDowntime(max(1, int(max_downtime_ms or 0)), 0)
                    return

    timer = threading.Timer(limit, abort)
    timer.daemon = True
    timer.start()
    if max_downtime_ms is not None:
        threading.Thread(target=downtime_once_running, daemon=True).start()
    try:
        dom.migrateToURI3(target["uri"], params, flags)
    except libvirt.libvirtError:
        if aborted.is_set():
            why = f"live migration not completed within {limit:g} s: aborted"
            raise TimeoutError(why) from None
        raise
    finally:
        aborted.set()
        timer.cancel()
    hv._known.pop(source_name, None)
    shutil.rmtree(hv.state_dir / source_name, ignore_errors=True)
    downtime = _downtime(target["uri"], target["name"])
    return LiveResult(downtime, f"to {target['uri']}")


def _downtime(uri: str, name: str) -> float | None:
    """The downtime libvirt measured, from the destination's completed job (if it says)."""
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return None
    try:
        stats = conn.lookupByName(name).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
        value = stats.get("downtime")
        return None if value is None else float(value)
    except libvirt.libvirtError:
        return None
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()


def export(hv: LibvirtHypervisor, instance_id: str, out: Path) -> None:
    """On a worker thread: the domain stopped, its writable disk (if any) as a tar."""
    dom = hv._lookup(instance_id)
    if dom.isActive():
        hv._stopping.add(instance_id)
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    folder = hv.state_dir / dom.name()
    tmp = out.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        disk = folder / "disk.qcow2"
        if disk.exists():
            tar.add(disk, "disk.qcow2")
    tmp.replace(out)


def import_(hv: LibvirtHypervisor, spec: GuestSpec, state: Path) -> GuestStatus:
    """On a worker thread: laid out from the image, its disk from `state`, started."""
    conn = hv._open()
    name = hv.prefix + spec.instance_id
    with contextlib.suppress(libvirt.libvirtError):
        old = conn.lookupByName(name)
        meta = hv._meta(old)
        if meta is not None and meta.incarnation == spec.incarnation and old.isActive():
            return hv._status(old, meta)
        hv._remove(old, spec.instance_id)
    folder = hv.state_dir / name
    files = hv._lay_out(spec, folder)
    with tarfile.open(state) as tar:
        if "disk.qcow2" in tar.getnames() and files.disk is not None:
            tar.extract("disk.qcow2", folder, filter="data")
            subprocess.run(
                ["qemu-img", "rebase", "-u", "-F", "qcow2", "-b",
                 str(Path(spec.image_path).resolve()), str(files.disk)],
                check=True, capture_output=True,
            )  # fmt: skip
            files.disk.chmod(0o644)
    xml = domain_xml(spec, name, hv.scope, files, hv._domain_type or "qemu", hv._cmdline(files))
    meta = DomainMeta(spec.instance_id, spec.incarnation, hv.scope, spec.image_id)
    hv._known[name] = meta
    dom = conn.defineXML(xml)
    dom.create()
    return hv._status(dom, meta)
