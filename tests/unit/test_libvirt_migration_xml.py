"""The definition a live migration's source hands to libvirt (drivers/libvirt_xml.py,
`migration_xml`): libvirt refuses one whose name or UUID differ from the running domain's
("Target domain name 'vimha-b-...' does not match source 'vimha-a-...'", seen with two real
libvirtd); everything else stays as the destination prepared it."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from vimha.drivers.libvirt_xml import DomainFiles, domain_xml, migration_xml, parse_meta
from vimha.ports.hypervisor import GuestPort, GuestSpec

UUID = "0f8e2a44-7b1c-4d2e-9a55-3c1d2b3a4f5e"


def prepared() -> str:
    spec = GuestSpec(
        instance_id="i-1",
        name="vm-1",
        incarnation=4,
        vcpus=1,
        ram_mib=256,
        disk_gib=1,
        image_id="img-1",
        image_path="/images/img-1",
        image_format="kernel+initrd",
        ports=(GuestPort("vnf-a", "52:54:00:00:00:01", "10.0.0.2", 24, bridge="br0"),),
        config_drive={},
    )
    files = DomainFiles(Path("/b/c.iso"), Path("/b/console.log"), Path("/b/k"), Path("/b/i"))
    return domain_xml(spec, "vimha-b-i-1", "b", files)


def test_the_source_name_and_uuid_the_destination_files_and_scope() -> None:
    root = ET.fromstring(migration_xml(prepared(), "vimha-a-i-1", UUID))
    assert root.findtext("name") == "vimha-a-i-1"
    assert root.findtext("uuid") == UUID
    assert len(root.findall("name")) == len(root.findall("uuid")) == 1
    assert root.findtext("os/kernel") == "/b/k"
    drive = root.find("devices/disk/source")
    assert drive is not None and drive.attrib["file"] == "/b/c.iso"
    meta = parse_meta(ET.tostring(root, encoding="unicode"))
    assert meta is not None and (meta.instance_id, meta.incarnation, meta.scope) == ("i-1", 4, "b")


def test_a_uuid_already_there_is_the_running_domains() -> None:
    once = migration_xml(prepared(), "vimha-a-i-1", "11111111-2222-3333-4444-555555555555")
    root = ET.fromstring(migration_xml(once, "vimha-a-i-1", UUID))
    assert [e.text for e in root.findall("uuid")] == [UUID]
