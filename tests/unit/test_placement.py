"""Placement filters and weighers: the decision and its reasons."""

from __future__ import annotations

from vimha.domain.compute import Flavor, HostResources
from vimha.domain.placement import Candidate, PlacementRequest, place

TINY = Flavor("f", "tiny", 1, 1024, 1)
BIG = Flavor("g", "big", 64, 1024, 1)


def host(name: str, health: str = "UP", used_ram: int = 0, hv: str = "process") -> Candidate:
    return Candidate(
        HostResources(name, 4, 8192, 100, used_ram_mib=used_ram, generation=7, hypervisor=hv),
        health,
    )


def test_spreads_to_the_host_with_most_free_ram() -> None:
    d = place(PlacementRequest(TINY), [host("a", used_ram=4096), host("b", used_ram=1024)])
    assert d.host == "b" and d.generation == 7
    assert d.scores["b"] > d.scores["a"]


def test_only_up_hosts_of_the_images_hypervisor() -> None:
    hosts = [
        host("down", "DOWN"),
        host("fenced", "FENCED"),
        host("maint", "MAINTENANCE"),
        host("qemu", hv="qemu"),
        host("ok"),
    ]
    d = place(PlacementRequest(TINY, hypervisor="process"), hosts)
    assert d.host == "ok"
    up = d.steps[0]
    assert up.removed == 3 and up.why["fenced"] == "host is FENCED"


def test_no_valid_host_names_each_filter_and_its_count() -> None:
    d = place(PlacementRequest(BIG), [host("a"), host("b", "DOWN")])
    assert d.host is None
    assert (
        d.reason == "No valid host was found: 2 candidate(s); HostUp removed 1, Capacity removed 1"
    )
    assert d.steps[-1].why["a"] == "vCPUs: needs 64, 16 free"


def test_hints() -> None:
    hosts = [host("a"), host("b"), host("c")]
    assert place(PlacementRequest(TINY, host="c"), hosts).host == "c"
    assert place(PlacementRequest(TINY, different_host=frozenset({"a", "b"})), hosts).host == "c"
    assert place(PlacementRequest(TINY, same_host=frozenset({"b"})), hosts).host == "b"
    explained = place(PlacementRequest(TINY, exclude=frozenset({"a"})), hosts).explain()
    assert explained["filters"][2]["removed"] == {"a": "excluded"}  # type: ignore[index]


def test_glance_hypervisor_types_qemu_and_kvm_name_the_libvirt_driver() -> None:
    hosts = [host("proc"), host("virt", hv="libvirt")]
    for image_type in ("qemu", "kvm", "QEMU", "libvirt"):
        d = place(PlacementRequest(TINY, hypervisor=image_type), hosts)
        assert d.host == "virt", image_type
        assert d.steps[1].why["proc"] == f"runs process, the image needs {image_type}"
