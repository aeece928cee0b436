"""The config drive of an instance, laid out as OpenStack's (issue 14), and the digest of a
guest's initial state (VNF-13). Pure.

The drive is built from the instance's stored spec only, so every incarnation gets the same
bytes: no incarnation number, no host, no zone, no random seed on it. Layout:

    openstack/latest/meta_data.json     uuid, name, hostname, launch_index, devices (NICs and
                                        the watchdog with their tags: Nova's device tagging),
                                        keys, public_keys, meta, files, and `vimha` (image,
                                        VNF, VDU, ports with their network names, bonds)
    openstack/latest/network_data.json  links (one per port, plus a bond per redundant
                                        pair), networks (IPv4, static), services
    openstack/latest/user_data          when given
    openstack/content/NNNN              injected files (meta_data.json `files` points here)

The guest's initial-state digest: lines "file <path> <sha256 of content>" for every file
of the drive and "nic <mac> <ip>" for every interface it has, each set sorted, joined with
"\\n" plus a final "\\n", hashed with SHA-256 (hex). The guest computes it at boot from what
it finds; `expected_digest` computes it from the spec.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Mapping
from typing import Any

from vimha.domain.compute import InstanceSpec

ROOT = "openstack/latest"


def _json(data: Any) -> bytes:
    return (json.dumps(data, sort_keys=True, indent=1) + "\n").encode()


def _link_id(index: int) -> str:
    return f"port{index}"


def layout(instance_id: str, name: str, spec: InstanceSpec, index: int = 0) -> dict[str, bytes]:
    """Path on the drive -> content."""
    cd = spec.config_drive
    files: dict[str, bytes] = {}
    injected = []
    for i, (path, content) in enumerate(cd.files):
        content_path = f"/content/{i:04d}"
        files[f"openstack{content_path}"] = content.encode()
        injected.append({"path": path, "content_path": content_path})
    devices: list[dict[str, Any]] = [
        {"type": "nic", "bus": "pci", "mac": p.mac, "tags": list(p.tags)} for p in spec.ports
    ]
    if spec.watchdog is not None:
        devices.append(
            {
                "type": "watchdog",
                "model": "i6300esb",
                "action": spec.watchdog.action.value,
                "timeout": spec.watchdog.timeout,
                "tags": list(spec.watchdog.tags),
            }
        )
    bonds: dict[str, list[str]] = {}
    for p in spec.ports:
        if p.bond:
            bonds.setdefault(p.bond, []).append(p.mac)
    meta = {
        "uuid": instance_id,
        "name": name,
        "hostname": name,
        "launch_index": index,
        "devices": devices,
        "keys": [{"name": k, "type": "ssh", "data": v} for k, v in sorted(cd.public_keys.items())],
        "public_keys": dict(cd.public_keys),
        "meta": {**cd.metadata, "vnf": spec.vnf_id or "", "vdu": spec.vdu or ""},
        "files": injected,
        "vimha": {
            "image_id": spec.image_id,
            "vnf_id": spec.vnf_id,
            "vdu": spec.vdu,
            "ports": [
                {
                    "mac": p.mac,
                    "ip": p.ip,
                    "network": p.network,
                    "tags": list(p.tags),
                    "bond": p.bond,
                }
                for p in spec.ports
            ],
            "bonds": [{"name": b, "macs": macs} for b, macs in sorted(bonds.items())],
        },
    }
    files[f"{ROOT}/meta_data.json"] = _json(meta)
    files[f"{ROOT}/network_data.json"] = _json(network_data(spec))
    if cd.user_data is not None:
        files[f"{ROOT}/user_data"] = cd.user_data.encode()
    return files


def network_data(spec: InstanceSpec) -> dict[str, Any]:
    links: list[dict[str, Any]] = []
    networks: list[dict[str, Any]] = []
    bonds: dict[str, list[str]] = {}
    for i, p in enumerate(spec.ports):
        link = _link_id(i)
        links.append(
            {
                "id": link,
                "type": "phy",
                "ethernet_mac_address": p.mac,
                "mtu": 1500,
                "vif_id": p.port_id,
            }
        )
        if p.bond:
            bonds.setdefault(p.bond, []).append(link)
        net = ipaddress.IPv4Network(f"{p.ip}/{p.prefix}", strict=False)
        entry: dict[str, Any] = {
            "id": f"network{i}",
            "type": "ipv4",
            "link": link,
            "ip_address": p.ip,
            "netmask": str(net.netmask),
            "network_id": p.network_id,
            "routes": [],
        }
        networks.append(entry)
    for name, members in sorted(bonds.items()):
        links.append(
            {
                "id": name,
                "type": "bond",
                "bond_links": members,
                "bond_mode": "active-backup",
                "ethernet_mac_address": spec.ports[int(members[0][4:])].mac,
            }
        )
    return {"links": links, "networks": networks, "services": []}


def digest(files: Mapping[str, bytes], nics: list[tuple[str, str]]) -> str:
    """The initial-state digest of a guest that has these drive files and interfaces."""
    lines = sorted(
        f"file {path} {hashlib.sha256(data).hexdigest()}" for path, data in files.items()
    )
    lines += sorted(f"nic {mac.lower()} {ip}" for mac, ip in nics)
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def expected_digest(instance_id: str, name: str, spec: InstanceSpec, index: int = 0) -> str:
    return digest(layout(instance_id, name, spec, index), [(p.mac, p.ip) for p in spec.ports])
