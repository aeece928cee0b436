"""The topology page's data: hosts grouped along the hierarchy (site -> zone -> rack ->
host by default), filtered, each with its planes, BMC, fencing and instances by VNF.

Stays usable at 1,000 hosts: hosts are small tiles grouped per rack, with a count of each
health status per group; the details (planes, BMC, fencing, instances) are shown as cards
only when the filter leaves few hosts (or one host is chosen)."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vimha.engine.runtime import Runtime

CARDS_UP_TO = 24  # more hosts than this: tiles (cards on demand, at most CARDS_MAX)
CARDS_MAX = 100
HEALTH_ORDER = ("DOWN", "FENCED", "DEGRADED", "UNKNOWN", "MAINTENANCE", "UP")
PROBLEMS = frozenset(HEALTH_ORDER) - {"UP"}


@dataclass(frozen=True, slots=True)
class Filters:
    q: str = ""  # part of a host, instance or VNF name
    health: str = ""  # "", "problems" or a status
    place: str = ""  # a location path prefix, e.g. "s1/z2"
    role: str = ""
    host: str = ""  # one host, exactly
    view: str = "auto"  # auto, tiles, cards

    @classmethod
    def of(cls, params: dict[str, str]) -> Filters:
        view = params.get("view", "auto")
        return cls(
            q=params.get("q", "").strip()[:100],
            health=params.get("health", "").strip().upper()[:20],
            place=params.get("place", "").strip().strip("/")[:200],
            role=params.get("role", "").strip()[:50],
            host=params.get("host", "").strip()[:255],
            view=view if view in ("auto", "tiles", "cards") else "auto",
        )


@dataclass(slots=True)
class Group:
    """Hosts sharing a place (e.g. one rack), counted by health."""

    path: str
    label: str
    hosts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def counts(self) -> list[tuple[str, int]]:
        c = Counter(h["healthStatus"] for h in self.hosts)
        return [(s, c[s]) for s in HEALTH_ORDER if c[s]]


@dataclass(slots=True)
class Section:
    """A level above the groups (e.g. site/zone)."""

    path: str
    groups: list[Group] = field(default_factory=list)

    @property
    def counts(self) -> list[tuple[str, int]]:
        c: Counter[str] = Counter()
        for g in self.groups:
            c.update(h["healthStatus"] for h in g.hosts)
        return [(s, c[s]) for s in HEALTH_ORDER if c[s]]


def matches(host: dict[str, Any], f: Filters) -> bool:
    if f.host:
        return bool(host["id"] == f.host)
    if f.health == "PROBLEMS" and host["healthStatus"] not in PROBLEMS:
        return False
    if f.health not in ("", "PROBLEMS") and host["healthStatus"] != f.health:
        return False
    path = host["location"].get("path", "")
    if f.place and not (path == f.place or path.startswith(f.place + "/")):
        return False
    if f.role and f.role not in host["roles"]:
        return False
    if f.q:
        q = f.q.lower()
        names = [host["id"], *(i["name"] for i in host["instances"]), *host["vnfs"]]
        return any(q in n.lower() for n in names)
    return True


def group(hosts: list[dict[str, Any]], hierarchy: tuple[str, ...]) -> list[Section]:
    """Sections by the levels above the last grouping level, groups by that level."""
    levels = [lv for lv in hierarchy if lv != "host"]
    box = levels[-1] if levels else None
    above = levels[:-1]
    sections: dict[str, Section] = {}
    for h in hosts:
        loc = h["location"]
        spath = "/".join(loc.get(lv, "-") for lv in above)
        gpath = "/".join([*(loc.get(lv, "-") for lv in above), loc.get(box, "-")]) if box else ""
        section = sections.setdefault(spath, Section(spath))
        if not section.groups or section.groups[-1].path != gpath:
            found = next((g for g in section.groups if g.path == gpath), None)
            if found is None:
                label = f"{box} {loc.get(box, '-')}" if box else "hosts"
                found = Group(gpath, label)
                section.groups.append(found)
        else:
            found = section.groups[-1]
        found.hosts.append(h)
    out = sorted(sections.values(), key=lambda s: s.path)
    for s in out:
        s.groups.sort(key=lambda g: g.path)
        for g in s.groups:
            g.hosts.sort(key=lambda h: h["id"])
    return out


def places(hosts: list[dict[str, Any]], hierarchy: tuple[str, ...]) -> list[str]:
    """Every location prefix above the hosts, for the place filter."""
    levels = [lv for lv in hierarchy if lv != "host"]
    found: set[str] = set()
    for h in hosts:
        loc = h["location"]
        parts = [loc.get(lv, "-") for lv in levels]
        for n in range(1, len(parts) + 1):
            found.add("/".join(parts[:n]))
    return sorted(found)


def _instances_by_vnf(
    instances: list[dict[str, Any]], vnf_names: dict[str, str]
) -> list[tuple[str, list[dict[str, Any]]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for i in instances:
        name = vnf_names.get(i["vnfId"] or "", i["vnfId"] or "(no VNF)")
        by.setdefault(name, []).append(i)
    return sorted(by.items())


async def topology(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    """What the topology page shows for these filters."""
    f = Filters.of(params)
    health = rt.health
    views = [] if health is None else [v for h in health.hosts if (v := health.view(h))]

    def reads() -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
        placed: dict[str, list[dict[str, Any]]] = {}
        for i in rt.store.compute.instances():
            if i.host is not None:
                placed.setdefault(i.host, []).append(
                    {
                        "id": i.id,
                        "name": i.name,
                        "vnfId": i.spec.vnf_id,
                        "status": i.status.value,
                        "incarnation": i.incarnation,
                    }
                )
        return placed, {v.id: v.name for v in rt.store.compute.vnfs()}

    placed, vnf_names = await asyncio.to_thread(reads)
    hosts = []
    for v in views:
        instances = placed.get(v["id"], [])
        by_vnf = _instances_by_vnf(instances, vnf_names)
        hosts.append(
            {
                **v,
                "instances": instances,
                "byVnf": by_vnf,
                "vnfs": [name for name, _ in by_vnf],
            }
        )
    hierarchy = rt.config.topology.hierarchy
    shown = [h for h in hosts if matches(h, f)]
    cards = f.view == "cards" or (f.view == "auto" and (len(shown) <= CARDS_UP_TO or f.host))
    totals = Counter(h["healthStatus"] for h in hosts)
    return {
        "filters": f,
        "sections": group(shown, hierarchy),
        "cards": sorted(shown, key=lambda h: h["id"])[:CARDS_MAX] if cards else [],
        "cardsCut": max(len(shown) - CARDS_MAX, 0) if cards else 0,
        "shown": len(shown),
        "total": len(hosts),
        "totals": [(s, totals[s]) for s in HEALTH_ORDER if totals[s]],
        "places": places(hosts, hierarchy),
        "roles": sorted({r for h in hosts for r in h["roles"]}),
        "statuses": HEALTH_ORDER,
    }
