"""The config drive's layout and the initial-state digest (VNF-13): the same for every
incarnation, computed alike by the domain and by the demo guest."""

from __future__ import annotations

import json

from vimha.cloud import demo_guest
from vimha.domain import configdrive
from vimha.domain.compute import (
    ConfigDrive,
    Flavor,
    InstanceSpec,
    PortSpec,
    WatchdogAction,
    WatchdogSpec,
)

SPEC = InstanceSpec(
    image_id="img-1",
    flavor=Flavor("f", "tiny", 1, 128, 1),
    ports=(
        PortSpec(
            "p0", "n-a", "vnf-a", "fa:16:3e:00:00:01", "10.0.0.5", 24, None, ("data",), "bond0"
        ),
        PortSpec(
            "p1", "n-b", "vnf-b", "fa:16:3e:00:00:02", "10.1.0.5", 24, None, ("data",), "bond0"
        ),
    ),
    config_drive=ConfigDrive(
        "#!/bin/sh\n", {"role": "fw"}, (("/etc/x.conf", "x=1\n"),), {"k": "ssh-ed25519 AAAA k"}
    ),
    watchdog=WatchdogSpec(5, WatchdogAction.RESET, ("ha",)),
    vnf_id="vnf-1",
    vdu="fw",
)


def test_openstack_layout() -> None:
    files = configdrive.layout("i-1", "vfw-fw-0", SPEC)
    assert set(files) == {
        "openstack/latest/meta_data.json",
        "openstack/latest/network_data.json",
        "openstack/latest/user_data",
        "openstack/content/0000",
    }
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == "i-1" and meta["meta"] == {"role": "fw", "vnf": "vnf-1", "vdu": "fw"}
    nics = [d for d in meta["devices"] if d["type"] == "nic"]
    assert [(d["mac"], d["tags"]) for d in nics] == [
        ("fa:16:3e:00:00:01", ["data"]),
        ("fa:16:3e:00:00:02", ["data"]),
    ]
    watchdog = next(d for d in meta["devices"] if d["type"] == "watchdog")
    assert watchdog["tags"] == ["ha"] and watchdog["action"] == "reset"
    assert meta["vimha"]["bonds"] == [
        {"name": "bond0", "macs": ["fa:16:3e:00:00:01", "fa:16:3e:00:00:02"]}
    ]
    assert meta["files"] == [{"path": "/etc/x.conf", "content_path": "/content/0000"}]
    net = json.loads(files["openstack/latest/network_data.json"])
    assert [n["ip_address"] for n in net["networks"]] == ["10.0.0.5", "10.1.0.5"]
    bond = next(link for link in net["links"] if link["type"] == "bond")
    assert bond["bond_links"] == ["port0", "port1"]


def test_the_drive_holds_nothing_that_differs_between_incarnations() -> None:
    assert configdrive.layout("i-1", "vfw-fw-0", SPEC) == configdrive.layout(
        "i-1", "vfw-fw-0", SPEC
    )
    blob = b"".join(configdrive.layout("i-1", "vfw-fw-0", SPEC).values())
    assert b"incarnation" not in blob and b"cmp-" not in blob


def test_guest_and_domain_compute_the_same_digest() -> None:
    files = configdrive.layout("i-1", "vfw-fw-0", SPEC)
    nics = [(p.mac, p.ip, p.network) for p in SPEC.ports]
    assert demo_guest.initial_digest(files, nics) == configdrive.expected_digest(
        "i-1", "vfw-fw-0", SPEC
    )


def test_the_digest_changes_with_an_address_or_the_content() -> None:
    base = configdrive.expected_digest("i-1", "vfw-fw-0", SPEC)
    other_ip = InstanceSpec(
        SPEC.image_id,
        SPEC.flavor,
        (SPEC.ports[0], PortSpec("p1", "n-b", "vnf-b", "fa:16:3e:00:00:02", "10.1.0.6", 24, None)),
        SPEC.config_drive,
        SPEC.watchdog,
        vnf_id="vnf-1",
        vdu="fw",
    )
    assert configdrive.expected_digest("i-1", "vfw-fw-0", other_ip) != base
    assert configdrive.digest({"a": b"1"}, []) != configdrive.digest({"a": b"2"}, [])
