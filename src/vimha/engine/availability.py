"""HA metrics (issue 20, VNF-4) for the API and the CLI: read the instances' state journal,
the alarms and the incidents of the longest window, compute with `domain/metrics.py`.
Blocking reads: the API calls it from worker threads. Any controller answers (all read the
same store)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vimha.domain import metrics as m
from vimha.domain.alarms import Alarm
from vimha.domain.clock import Clock, iso
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.incidents import (
    HOST_FAULTS,
    INSTANCE_FAULTS,
    SPANS,
    Kind,
    State,
    StateSeen,
    budgets,
    final_spans,
)
from vimha.ports.store import Store

WINDOWS = dict(m.WINDOWS)


@dataclass(slots=True)
class Period:
    """Everything read for one computation."""

    now: datetime
    since: datetime
    rows: dict[str, list[StateSeen]]
    by_id: dict[str, Alarm]
    of_instance: dict[str, list[Alarm]]
    of_host: dict[str, list[Alarm]]
    instance_failures_on: dict[str, list[Alarm]]


class Availability:
    def __init__(
        self,
        store: Store,
        clock: Clock,
        targets: Mapping[str, float],
        hosts: Callable[[], Iterable[str]] = lambda: (),
    ) -> None:
        self.store = store
        self.clock = clock
        self.targets = targets
        self.hosts = hosts  # the hosts watched (those without any alarm too)

    def _period(self, instance_ids: Sequence[str] | None = None) -> Period:
        now = self.clock.now()
        since = now - max(WINDOWS.values())
        rows = m.by_instance(self.store.insight.journal_since(since, instance_ids))
        alarms = self.store.insight.alarms_since(since)
        by_id = {a.id: a for a in alarms}
        of_instance: dict[str, list[Alarm]] = defaultdict(list)
        of_host: dict[str, list[Alarm]] = defaultdict(list)
        failures_on: dict[str, list[Alarm]] = defaultdict(list)
        for a in alarms:
            if a.vim_level_resource_type == "instance":
                of_instance[a.resource_id].append(a)
                host = next((v for k, v in a.location.levels if k == "host"), None)
                if host and a.fault_type in INSTANCE_FAULTS:
                    failures_on[host].append(a)
            elif a.fault_type in HOST_FAULTS and a.vim_level_resource_type == "host":
                of_host[a.managed_object_id].append(a)
        return Period(now, since, rows, by_id, of_instance, of_host, failures_on)

    def _instance(self, p: Period, iid: str) -> m.Record:
        return m.instance_record(
            p.rows.get(iid, []), p.of_instance.get(iid, []), p.of_host, p.by_id, p.now
        )

    @staticmethod
    def _windows(record: m.Record, now: datetime) -> dict[str, Any]:
        return {
            name: m.figures(record, name, span, now).to_dict() for name, span in WINDOWS.items()
        }

    @staticmethod
    def _population(records: Sequence[m.Record], now: datetime) -> dict[str, Any]:
        return {
            name: m.population_figures(records, name, span, now).to_dict()
            for name, span in WINDOWS.items()
        }

    @staticmethod
    def _outages(record: m.Record, now: datetime) -> list[dict[str, Any]]:
        return [o.to_dict(now) for o in record.outages]

    # -- one subject --------------------------------------------------------------------
    def instance(self, instance_id: str) -> dict[str, Any]:
        inst = self.store.compute.instance(instance_id)
        p = self._period([inst.id])
        record = self._instance(p, inst.id)
        return {
            "instanceId": inst.id,
            "name": inst.name,
            "vnfId": inst.spec.vnf_id,
            "vdu": inst.spec.vdu,
            "sal": inst.spec.sal.value,
            "host": inst.host,
            "status": inst.status.value,
            "windows": self._windows(record, p.now),
            "outages": self._outages(record, p.now),
        }

    def vnf(self, ref: str) -> dict[str, Any]:
        vnf = self.store.compute.vnf(ref)
        ids = [i.id for i in self.store.compute.instances(vnf_id=vnf.id, deleted=True)]
        p = self._period(ids)
        records = {iid: self._instance(p, iid) for iid in ids}
        service = m.service_record(self._by_vdu(p, records), p.now)
        return {
            "vnfId": vnf.id,
            "name": vnf.name,
            "sal": vnf.sal.value,
            "service": {
                "windows": self._windows(service, p.now),
                "outages": self._outages(service, p.now),
            },
            "instances": {
                "windows": self._population(list(records.values()), p.now),
                "members": [
                    {
                        "instanceId": iid,
                        "name": _name(p, iid),
                        "availability": {
                            name: m.figures(r, name, span, p.now).to_dict()["availability"]
                            for name, span in WINDOWS.items()
                        },
                        "outages": len(r.outages),
                    }
                    for iid, r in records.items()
                ],
            },
        }

    def host(self, host: str) -> dict[str, Any]:
        p = self._period()
        known = set(self.hosts()) | set(self.store.compute.hosts()) | set(p.of_host)
        if host not in known:
            raise NotFound(f"host {host} not found")
        record = m.host_record(p.of_host.get(host, []), p.since, p.by_id, p.now)
        return {
            "host": host,
            "windows": self._windows(record, p.now),
            "outages": self._outages(record, p.now),
            "instanceFailures": self._counts(p.instance_failures_on.get(host, []), p.now),
        }

    def sal(self, level: str) -> dict[str, Any]:
        if level not in ("LEVEL_1", "LEVEL_2", "LEVEL_3"):
            raise NotFound(f"SAL {level} not found: LEVEL_1, LEVEL_2 or LEVEL_3")
        p = self._period()
        services, instances = self._sal_records(p).get(level, ([], []))
        return {
            "sal": level,
            "vnfs": len(services),
            "instances": len(instances),
            "service": {"windows": self._population(services, p.now)},
            "instanceLevel": {"windows": self._population(instances, p.now)},
        }

    # -- everything, for one window -----------------------------------------------------
    def summary(self, window: str = "1d") -> dict[str, Any]:
        span = WINDOWS.get(window)
        if span is None:
            raise InvalidInput(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
        p = self._period()
        records = {iid: self._instance(p, iid) for iid in p.rows}
        vnfs = {v.id: v for v in self.store.compute.vnfs()}
        vnf_rows = []
        for vnf_id, vdus in self._vnf_groups(p, records).items():
            service = m.service_record(vdus, p.now)
            vnf = vnfs.get(vnf_id)
            members = [r for rs in vdus.values() for r in rs]
            vnf_rows.append(
                {
                    "vnfId": vnf_id,
                    "name": vnf.name if vnf else vnf_id,
                    "sal": vnf.sal.value if vnf else None,
                    "service": m.figures(service, window, span, p.now).to_dict(),
                    "instances": m.population_figures(members, window, span, p.now).to_dict(),
                }
            )
        sals = []
        for level, (services, instances) in sorted(self._sal_records(p, records).items()):
            sals.append(
                {
                    "sal": level,
                    "vnfs": len(services),
                    "instanceCount": len(instances),
                    "service": m.population_figures(services, window, span, p.now).to_dict(),
                    "instances": m.population_figures(instances, window, span, p.now).to_dict(),
                }
            )
        hosts = sorted(set(self.hosts()) | set(self.store.compute.hosts()) | set(p.of_host))
        host_rows = []
        for h in hosts:
            record = m.host_record(p.of_host.get(h, []), p.since, p.by_id, p.now)
            failures = p.instance_failures_on.get(h, [])
            host_rows.append(
                {
                    "host": h,
                    **m.figures(record, window, span, p.now).to_dict(),
                    "instanceFailures": sum(
                        1 for a in failures if a.alarm_raised_time >= p.now - span
                    ),
                }
            )
        return {
            "window": window,
            "from": iso(p.now - span),
            "to": iso(p.now),
            "sals": sals,
            "vnfs": sorted(vnf_rows, key=lambda v: str(v["name"])),
            "hosts": host_rows,
            "incidents": self.stages(window),
        }

    def stages(self, window: str = "1d") -> dict[str, Any]:
        """Per stage, over the incidents opened in the window whose time of that stage is
        final (detection and fencing once known, the others once every instance serves
        again): how many, mean, p50, p99, max, and how many went over their target."""
        span = WINDOWS.get(window)
        if span is None:
            raise InvalidInput(f"window: {window!r} is not one of {', '.join(WINDOWS)}")
        since = self.clock.now() - span
        found = [
            i
            for i in self.store.insight.incidents(None, 100_000)
            if i.opened_at >= since and i.kind is not Kind.ELEMENT and i.state is not State.MERGED
        ]
        values: dict[str, list[float]] = {s: [] for s in SPANS}
        over: dict[str, int] = dict.fromkeys(SPANS, 0)
        for inc in found:
            final = final_spans(inc)
            for b in budgets(inc, self.targets):
                if b.span in final and b.seconds is not None:
                    values[b.span].append(b.seconds)
                    over[b.span] += b.over
        out: dict[str, Any] = {
            "window": window,
            "opened": len(found),
            "open": sum(1 for i in found if i.state is State.OPEN),
            "stages": {},
        }
        for s in SPANS:
            v = sorted(values[s])
            out["stages"][s] = {
                "count": len(v),
                "targetSeconds": self.targets.get(s),
                "meanSeconds": round(statistics.fmean(v), 3) if v else None,
                "p50Seconds": round(_pct(v, 0.5), 3) if v else None,
                "p99Seconds": round(_pct(v, 0.99), 3) if v else None,
                "maxSeconds": round(v[-1], 3) if v else None,
                "overTarget": over[s],
            }
        return out

    # -- grouping -----------------------------------------------------------------------
    @staticmethod
    def _by_vdu(p: Period, records: Mapping[str, m.Record]) -> dict[str, list[m.Record]]:
        out: dict[str, list[m.Record]] = defaultdict(list)
        for iid, r in records.items():
            rows = p.rows.get(iid)
            out[(rows[-1].vdu if rows else None) or "-"].append(r)
        return out

    @staticmethod
    def _vnf_groups(
        p: Period, records: Mapping[str, m.Record]
    ) -> dict[str, dict[str, list[m.Record]]]:
        out: dict[str, dict[str, list[m.Record]]] = defaultdict(lambda: defaultdict(list))
        for iid, r in records.items():
            rows = p.rows.get(iid)
            if not rows or not rows[-1].vnf_id:
                continue
            out[rows[-1].vnf_id][rows[-1].vdu or "-"].append(r)
        return out

    def _sal_records(
        self, p: Period, records: Mapping[str, m.Record] | None = None
    ) -> dict[str, tuple[list[m.Record], list[m.Record]]]:
        if records is None:
            records = {iid: self._instance(p, iid) for iid in p.rows}
        out: dict[str, tuple[list[m.Record], list[m.Record]]] = defaultdict(lambda: ([], []))
        for iid, r in records.items():
            rows = p.rows.get(iid)
            if rows and rows[-1].sal:
                out[rows[-1].sal][1].append(r)
        for vdus in self._vnf_groups(p, records).values():
            first = next(iter(vdus.values()))[0]
            iid = next(i for i, r in records.items() if r is first)
            sal = p.rows[iid][-1].sal
            if sal:
                out[sal][0].append(m.service_record(vdus, p.now))
        return out

    @staticmethod
    def _counts(alarms: Sequence[Alarm], now: datetime) -> dict[str, int]:
        return {
            name: sum(1 for a in alarms if a.alarm_raised_time >= now - span)
            for name, span in WINDOWS.items()
        }


def _pct(values: Sequence[float], q: float) -> float:
    """The q-quantile (nearest rank) of sorted values."""
    k = max(0, min(len(values) - 1, round(q * len(values) + 0.5) - 1))
    return values[k]


def _name(p: Period, iid: str) -> str:
    rows = p.rows.get(iid)
    return rows[-1].name if rows else iid
