"""The topology page's grouping and filters (pure functions), at 1,000 hosts."""

from __future__ import annotations

from typing import Any

import pytest

from vimha.api.ui.session import safe_next
from vimha.api.ui.topology import Filters, group, matches, places
from vimha.api.ui.views import timeline

HIERARCHY = ("site", "zone", "rack", "host")


def host(
    name: str, site: str, zone: str, rack: str, health: str = "UP", **kw: Any
) -> dict[str, Any]:
    loc = {"site": site, "zone": zone, "rack": rack, "host": name}
    loc["path"] = f"{site}/{zone}/{rack}/{name}"
    return {
        "id": name,
        "healthStatus": health,
        "location": loc,
        "roles": kw.get("roles", ["compute"]),
        "instances": kw.get("instances", []),
        "vnfs": kw.get("vnfs", []),
    }


def cloud(n: int = 1000) -> list[dict[str, Any]]:
    """2 sites, 2 zones each, 10 racks per zone, hosts spread over them."""
    out = []
    for i in range(n):
        site, zone, rack = f"s{i % 2 + 1}", f"z{i // 2 % 2 + 1}", f"r{i // 4 % 10 + 1:02d}"
        health = "DOWN" if i % 97 == 0 else "UP"
        out.append(host(f"cmp-{i:04d}", site, zone, rack, health))
    return out


def test_a_thousand_hosts_in_sections_and_racks_with_counts() -> None:
    sections = group(cloud(), HIERARCHY)
    assert [s.path for s in sections] == ["s1/z1", "s1/z2", "s2/z1", "s2/z2"]
    assert all(len(s.groups) == 10 for s in sections)
    assert sum(len(g.hosts) for s in sections for g in s.groups) == 1000
    rack = sections[0].groups[0]
    assert rack.label == "rack r01" and rack.path == "s1/z1/r01"
    assert [h["id"] for h in rack.hosts] == sorted(h["id"] for h in rack.hosts)
    down = sum(n for s in sections for st, n in s.counts if st == "DOWN")
    assert down == 11  # 0, 97, ..., 970


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({}, 1000),
        ({"health": "problems"}, 11),
        ({"health": "down"}, 11),
        ({"place": "s2/z1"}, 250),
        ({"place": "s2/z1/r03"}, 25),
        ({"place": "s2/z"}, 0),  # a prefix of a level's value is no place
        ({"q": "cmp-00"}, 100),
        ({"host": "cmp-0042"}, 1),
        ({"host": "cmp-0042", "health": "DOWN"}, 1),  # one host chosen: shown whatever else
        ({"role": "control"}, 0),
    ],
)
def test_filters(params: dict[str, str], count: int) -> None:
    f = Filters.of(params)
    assert sum(matches(h, f) for h in cloud()) == count


def test_search_finds_hosts_by_their_instances_and_vnfs() -> None:
    hosts = [
        host("cmp-1", "s1", "z1", "r1", instances=[{"name": "vfw-fw-0"}], vnfs=["vfw"]),
        host("cmp-2", "s1", "z1", "r1"),
    ]
    assert [h["id"] for h in hosts if matches(h, Filters.of({"q": "FW-0"}))] == ["cmp-1"]
    assert [h["id"] for h in hosts if matches(h, Filters.of({"q": "vfw"}))] == ["cmp-1"]


def test_places_for_the_filter_and_a_shorter_hierarchy() -> None:
    hosts = [host("a", "s1", "z1", "r1"), host("b", "s1", "z2", "r9")]
    assert places(hosts, HIERARCHY) == ["s1", "s1/z1", "s1/z1/r1", "s1/z2", "s1/z2/r9"]
    sections = group(hosts, ("zone", "host"))
    assert [(s.path, [g.label for g in s.groups]) for s in sections] == [
        ("", ["zone z1", "zone z2"])
    ]
    assert Filters.of({"view": "bogus", "q": "  x  "}) == Filters(q="x")


def test_switchover_timeline_offsets() -> None:
    last = {"slot": 0, "detected": 100.0, "fenced": None, "promoted": 100.25, "serving": 100.4}
    got = timeline(last, now=130.0)
    assert got is not None and got["ago"] == "30 s ago"
    assert [(s["step"], s["offsetMs"]) for s in got["steps"]] == [
        ("detected", 0),
        ("fenced", None),
        ("promoted", 250),
        ("serving", 400),
    ]
    assert timeline(None, 0) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/ui/"),
        ("/ui/alarms?q=cmp-2", "/ui/alarms?q=cmp-2"),
        ("https://evil.example/ui/", "/ui/"),
        ("//evil.example/ui/", "/ui/"),
        ("/ui//evil.example", "/ui/"),
        ("/ui\\\\evil", "/ui/"),
        ("/vim/v1/hosts", "/ui/"),
    ],
)
def test_login_returns_only_into_the_dashboard(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected
