"""Libvirt domain XML for one incarnation of an instance, and the metadata read back from it
(what lets a restarted agent adopt its guests). Pure: no libvirt calls.

One domain per instance, named `<prefix><instance id>`; its metadata element
(`NAMESPACE`) holds the instance id, the incarnation, the scope (the node it belongs to,
when several agents share one libvirtd) and the image. Choices, in the order of the XML:
- direct kernel boot for `kernel+initrd` bundles, `vimha.incarnation=N` (and
  `vimha.watchdog=SECONDS`) on the kernel command line; a `qcow2` image boots from its disk
  (a fresh overlay per incarnation) and gets the incarnation as an SMBIOS OEM string;
- `on_crash` destroy: a panicked guest (pvpanic) stays down as SHUTOFF/crashed until the agent
  decides; `on_reboot` restart;
- the config drive as a read-only virtio disk holding an ISO 9660 volume labelled config-2;
- a virtio NIC per port with its MAC: on the port's bridge when it has one, else QEMU's user
  networking (the guest still configures the port's address: its digest is the same);
  no option ROM (iPXE would only slow the boot);
- the serial console on a pty (the live attachment) logged to a file (virtlogd);
- an i6300esb watchdog with the spec's action; a pvpanic device; no memory balloon, no USB.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from vimha.ports.hypervisor import GuestSpec

NAMESPACE = "https://vimha.dev/xmlns/libvirt/instance/1"
PREFIX = "vimha"


@dataclass(frozen=True, slots=True)
class DomainFiles:
    """Where one incarnation's files are (all under the instance's folder)."""

    config_drive: Path
    console_log: Path
    kernel: Path | None = None
    initrd: Path | None = None
    disk: Path | None = None


@dataclass(frozen=True, slots=True)
class DomainMeta:
    instance_id: str
    incarnation: int
    scope: str
    image_id: str = ""


def kernel_cmdline(base: str, spec: GuestSpec) -> str:
    words = [base, f"vimha.incarnation={spec.incarnation}"]
    if spec.watchdog is not None:
        words.append(f"vimha.watchdog={max(1, math.ceil(spec.watchdog.timeout))}")
    return " ".join(w for w in words if w)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def domain_xml(
    spec: GuestSpec,
    name: str,
    scope: str,
    files: DomainFiles,
    domain_type: str = "qemu",
    cmdline: str = "",
) -> str:
    """The domain definition of `spec` (for `virConnect.defineXML`)."""
    dom = ET.Element("domain", {"type": domain_type})
    _sub(dom, "name", name)
    if spec.name:
        _sub(dom, "title", spec.name.replace("\n", " "))
    meta = _sub(dom, "metadata")
    ET.SubElement(
        meta,
        f"{{{NAMESPACE}}}instance",
        {
            "id": spec.instance_id,
            "incarnation": str(spec.incarnation),
            "scope": scope,
            "image": spec.image_id,
        },
    )
    _sub(dom, "memory", str(spec.ram_mib), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))
    if files.disk is not None:
        sysinfo = _sub(dom, "sysinfo", type="smbios")
        oem = _sub(sysinfo, "oemStrings")
        _sub(oem, "entry", f"vimha.incarnation={spec.incarnation}")
    os_el = _sub(dom, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine="pc")
    if files.kernel is not None:
        _sub(os_el, "kernel", str(files.kernel))
        if files.initrd is not None:
            _sub(os_el, "initrd", str(files.initrd))
        _sub(os_el, "cmdline", kernel_cmdline(cmdline, spec))
    else:
        _sub(os_el, "boot", dev="hd")
        _sub(os_el, "smbios", mode="sysinfo")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")
    devices = _sub(dom, "devices")
    _sub(devices, "controller", type="usb", model="none")
    if files.disk is not None:
        disk = _sub(devices, "disk", type="file", device="disk")
        _sub(disk, "driver", name="qemu", type="qcow2")
        _sub(disk, "source", file=str(files.disk))
        _sub(disk, "target", dev="vda", bus="virtio")
    drive = _sub(devices, "disk", type="file", device="disk")
    _sub(drive, "driver", name="qemu", type="raw")
    _sub(drive, "source", file=str(files.config_drive))
    _sub(drive, "target", dev="vdb" if files.disk is not None else "vda", bus="virtio")
    _sub(drive, "readonly")
    _sub(drive, "serial", "config-2")
    for port in spec.ports:
        nic = _sub(devices, "interface", type="bridge" if port.bridge else "user")
        _sub(nic, "mac", address=port.mac.lower())
        if port.bridge:
            _sub(nic, "source", bridge=port.bridge)
        _sub(nic, "model", type="virtio")
        _sub(nic, "rom", enabled="no")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(files.console_log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.watchdog is not None:
        _sub(devices, "watchdog", model="i6300esb", action=spec.watchdog.action.value)
    _sub(devices, "panic", model="isa")
    _sub(devices, "memballoon", model="none")
    ET.register_namespace(PREFIX, NAMESPACE)
    return ET.tostring(dom, encoding="unicode")


def parse_meta(xml: str) -> DomainMeta | None:
    """The vimha metadata of a domain (its whole XML, or the metadata element alone); None for
    a domain vimha did not define."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    tag = f"{{{NAMESPACE}}}instance"
    # virDomainGetMetadata gives the element back without its namespace.
    el = root if root.tag in (tag, "instance") else root.find(f"./metadata/{tag}")
    if el is None:
        return None
    try:
        return DomainMeta(
            instance_id=el.attrib["id"],
            incarnation=int(el.attrib["incarnation"]),
            scope=el.attrib.get("scope", ""),
            image_id=el.attrib.get("image", ""),
        )
    except (KeyError, ValueError):
        return None


def migration_xml(xml: str, name: str, uuid: str) -> str:
    """The destination's definition (`xml`, from its `prepare_incoming`) as the source hands
    it to libvirt for a live migration (VIR_MIGRATE_PARAM_DEST_XML): with the running
    domain's name and UUID, which libvirt checks against it ("Target domain name ... does not
    match source"); the destination's own name goes as VIR_MIGRATE_PARAM_DEST_NAME, which
    libvirt gives the domain there. The rest (its files, its scope) stays the destination's."""
    root = ET.fromstring(xml)
    name_el = root.find("name")
    if name_el is None:
        name_el = ET.Element("name")
        root.insert(0, name_el)
    name_el.text = name
    uuid_el = root.find("uuid")
    if uuid_el is None:
        uuid_el = ET.Element("uuid")
        root.insert(list(root).index(name_el) + 1, uuid_el)
    uuid_el.text = uuid
    ET.register_namespace(PREFIX, NAMESPACE)
    return ET.tostring(root, encoding="unicode")
