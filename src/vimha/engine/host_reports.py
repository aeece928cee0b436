"""The agents' side of the compute model (issue 14): what each host should run (watched by
its agent), and what each agent reports of its guests.

A report holds every guest the agent runs (its state, incarnation, the last reboot it did),
what happened to them since the last report (a watchdog's action, a crash), and what the
node has (capacity, traits, the console endpoint). It is judged on a read first; only a
report that changes something takes a unit of work (most periodic reports change nothing).
The answer tells the agent what to do with guests the controller does not want there:
`destroy` (deleted, moved elsewhere, an older incarnation) or `unknown` (no controller
knows it: alarmed, left running, never killed silently).
"""

from __future__ import annotations

import base64
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from vimha.domain import configdrive, instance_faults
from vimha.domain.compute import (
    HostResources,
    Instance,
    InstanceAction,
    InstanceStatus,
    Power,
)
from vimha.domain.errors import NotFound
from vimha.domain.instance_faults import InstanceFault
from vimha.domain.instance_states import Observation, Outcome, Seen, observe
from vimha.engine.compute import ComputeService, Done
from vimha.engine.migration import Migrations, agent_doc
from vimha.engine.recovery import Recovery
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.host_reports")


@dataclass(frozen=True, slots=True)
class GuestReport:
    id: str
    incarnation: int
    state: Seen
    rebooted: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class GuestEventReport:
    id: str
    incarnation: int
    kind: str  # GuestEventKind
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HostReport:
    host: str
    guests: tuple[GuestReport, ...]
    events: tuple[GuestEventReport, ...] = ()
    resources: Mapping[str, Any] | None = None  # vcpus, ramMib, diskGib, traits, hypervisor
    console: str | None = None  # host:port of the agent's console relay
    migrations: tuple[Mapping[str, Any], ...] = ()  # phases of migrations (issue 19)


@dataclass(slots=True)
class Verdict:
    destroy: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    changed: int = 0


EVENT_FAULTS = {
    "HUNG": InstanceFault.HUNG,
    "WATCHDOG": InstanceFault.WATCHDOG,
    "CRASHED": InstanceFault.CRASHED,
    "DIED": InstanceFault.CRASHED,
    "IO_ERROR": InstanceFault.IO_ERROR,
}


class HostReports:
    def __init__(
        self,
        compute: ComputeService,
        declared: Callable[[str], HostResources | None],
        ratios: tuple[float, float, float] = (4.0, 1.0, 1.0),
        health: Callable[[str], str] = lambda host: "UP",
    ) -> None:
        self.compute = compute
        self.store = compute.store
        self.clock = compute.clock
        self.declared = declared  # the operator's capacity and traits for a host, if any
        self.health = health  # a host's health status as the health loop judges it now
        self.recovery: Recovery | None = None  # applies the recovery policy to failures
        self.migrations: Migrations | None = None  # takes the migrations' phases (issue 19)
        self.migration_timeout = 180.0
        self.ratios = ratios  # cpu, ram, disk allocation ratios of reported capacities

    # -- what a host should run ---------------------------------------------------------
    def desired(self, host: str) -> dict[str, Any]:
        """The generation first: a change between the two reads shows as a generation the
        agent already has, with the newer list, and it asks again at once."""
        generation = self.store.compute.generations().get(host, 0)
        instances = self.store.compute.instances(host=host)
        moving = [
            m for m in self.store.maintenance.migrations(active=True) if host in (m.source, m.dest)
        ]
        leaving = {m.instance_id: m for m in moving if m.source == host}
        docs = []
        for i in instances:
            doc = self.guest_doc(i)
            if i.id in leaving:
                doc["migration"] = agent_doc(leaving[i.id], "source", self.migration_timeout)
            docs.append(doc)
        incoming = []
        for m in moving:
            if m.dest != host:
                continue
            try:
                inst = self.store.compute.instance(m.instance_id)
            except NotFound:
                continue
            doc = self.guest_doc(inst)
            doc["migration"] = agent_doc(m, "dest", self.migration_timeout)
            incoming.append(doc)
        return {"generation": generation, "instances": docs, "incoming": incoming}

    def guest_doc(self, i: Instance) -> dict[str, Any]:
        spec = i.spec
        image = self.store.compute.image(spec.image_id)
        drive = configdrive.layout(i.id, i.name, spec, i.index)
        return {
            "id": i.id,
            "name": i.name,
            "incarnation": i.incarnation,
            "power": i.power.value,
            "reboot": {"seq": i.reboot_seq, "hard": i.reboot_hard},
            "vnf": spec.vnf_id or "",
            "vcpus": spec.flavor.vcpus,
            "ramMib": spec.flavor.ram_mib,
            "diskGib": spec.flavor.disk_gib,
            "image": {
                "id": image.id,
                "digest": image.digest,
                "diskFormat": image.disk_format,
                "properties": dict(image.properties),
            },
            "ports": [p.to_dict() for p in spec.ports],
            "configDrive": {k: base64.b64encode(v).decode() for k, v in drive.items()},
            "watchdog": None
            if spec.watchdog is None
            else {"timeout": spec.watchdog.timeout, "action": spec.watchdog.action.value},
            "metadata": dict(spec.metadata),
            "healthCheck": None if spec.health_check is None else dict(spec.health_check),
        }

    # -- what an agent reports ----------------------------------------------------------
    def report(self, report: HostReport) -> Verdict:
        if self._dirty(report):
            return self.compute.run(lambda uow, done: self._apply(uow, done, report))
        verdict = Verdict()
        return verdict

    def _effective(self, report: HostReport) -> HostResources | None:
        r = report.resources
        if r is None:
            return None
        declared = self.declared(report.host)
        base = HostResources(
            report.host,
            int(r.get("vcpus", 0)),
            int(r.get("ramMib", 0)),
            int(r.get("diskGib", 0)),
            cpu_ratio=self.ratios[0],
            ram_ratio=self.ratios[1],
            disk_ratio=self.ratios[2],
            traits=frozenset(r.get("traits", ())),
            hypervisor=str(r.get("hypervisor", "process")),
        )
        if declared is None:
            return base
        if declared.vcpus == 0:  # no capacity declared: what the agent reports
            return replace(base, traits=declared.traits | base.traits)
        return replace(
            declared,
            traits=declared.traits | base.traits,
            hypervisor=base.hypervisor,
        )

    def _dirty(self, report: HostReport) -> bool:
        """Would this report change anything? (a read: most periodic reports change
        nothing and take no write)"""
        if report.events or report.migrations:
            return True
        wanted = self._effective(report)
        if wanted is not None:
            stored = self.store.compute.hosts().get(report.host)
            if stored is None or _capacity(stored) != _capacity(wanted):
                return True
            if report.console and self._console_of(report.host) != report.console:
                return True
            if self._ability_moved(report):
                return True
        now = self.clock.now()
        failed = self._failed(report.host)
        assigned = {i.id: i for i in self.store.compute.instances(host=report.host)}
        for g in report.guests:
            inst = assigned.get(g.id)
            if inst is None or g.incarnation < inst.incarnation:
                return True
            if observe(inst, _observation(g), now, failed).instance is not None:
                return True
        seen = {g.id for g in report.guests}
        return any(
            observe(i, Observation(Seen.GONE, i.incarnation), now, failed).instance is not None
            for i in assigned.values()
            if i.id not in seen
        )

    def _failed(self, host: str) -> bool:
        """Judged failed (its instances UNKNOWN until it is heard again, or recovered)."""
        return self.health(host) in ("DOWN", "FENCED")

    def _ability_moved(self, report: HostReport) -> bool:
        """What the host's hypervisor says of migrations changed (issue 19)."""
        said = (report.resources or {}).get("migration")
        return said != (self.store.compute.reported(report.host) or {}).get("migration")

    def _console_of(self, host: str) -> str | None:
        """The host's console relay endpoint, as its agent last reported it."""
        value = (self.store.compute.reported(host) or {}).get("console")
        return None if value is None else str(value)

    def _apply(self, uow: UnitOfWork, done: Done, report: HostReport) -> Verdict:
        now = self.clock.now()
        verdict = Verdict()
        host = report.host
        location = self.compute.location(host)
        wanted = self._effective(report)
        if wanted is not None:
            stored = uow.compute.hosts().get(host)
            moved = (
                report.console and self._console_of(host) != report.console
            ) or self._ability_moved(report)
            if stored is None or _capacity(stored) != _capacity(wanted) or moved:
                reported = {**dict(report.resources or {}), "console": report.console}
                done.generations[host] = uow.compute.upsert_host(wanted, reported, now)
        assigned = {i.id: i for i in uow.compute.instances_of(host)}
        failed = self._failed(host)
        for g in report.guests:
            inst = assigned.get(g.id)
            if inst is None:
                self._stray(uow, done, verdict, host, g, location)
                continue
            if g.incarnation < inst.incarnation:
                verdict.destroy.append(g.id)
                continue
            outcome = observe(inst, _observation(g), now, failed)
            self._outcome(uow, done, inst, outcome, verdict)
        seen = {g.id for g in report.guests}
        for inst in assigned.values():
            if inst.id not in seen:
                gone = Observation(Seen.GONE, inst.incarnation)
                self._outcome(uow, done, inst, observe(inst, gone, now, failed), verdict)
        for event in report.events:
            self._event(uow, done, assigned.get(event.id), event, location)
        if self.migrations is not None:
            for item in report.migrations:
                self.migrations.on_phase(uow, done, host, item)
        return verdict

    def _stray(
        self,
        uow: UnitOfWork,
        done: Done,
        verdict: Verdict,
        host: str,
        g: GuestReport,
        location: Any,
    ) -> None:
        """A guest on a host that should not run it: known elsewhere or deleted (destroy
        it), or unknown (alarm, keep)."""
        try:
            known = uow.compute.instance_for_update(g.id)
        except NotFound:
            verdict.unknown.append(g.id)
            event = instance_faults.unmanaged(host, g.id, self.clock.now(), location)
            self.compute.alarm(uow, done, [event])
            return
        moving = uow.maintenance.active_migration(g.id)
        if moving is not None and moving.dest == host:
            return  # arriving by a migration: its phases decide
        log.warning(
            "%s runs %s (incarnation %d), which is %s on %s: destroyed",
            host,
            known.name,
            g.incarnation,
            known.status.value,
            known.host,
        )
        verdict.destroy.append(g.id)

    def _outcome(
        self, uow: UnitOfWork, done: Done, old: Instance, outcome: Outcome, verdict: Verdict
    ) -> None:
        new = outcome.instance
        if new is None:
            return
        now = self.clock.now()
        uow.compute.update_instance(old, new)
        verdict.changed += 1
        location = self.compute.location(old.host)
        if outcome.finished is not None:
            uow.compute.finish_action(
                old.id, None, "success" if outcome.ok else "error", outcome.reason, now
            )
        if outcome.failure is not None:
            kind = (
                InstanceFault.STOPPED
                if new.status in (InstanceStatus.SHUTOFF, InstanceStatus.PAUSED)
                else InstanceFault.CRASHED
            )
            self.compute.alarm(
                uow, done, [instance_faults.raised(new, kind, outcome.failure, now, location)]
            )
        if new.status is InstanceStatus.ACTIVE and old.status is not InstanceStatus.ACTIVE:
            self.compute.alarm(uow, done, instance_faults.cleared(new, now, "ACTIVE", location))
        if new.status is InstanceStatus.DELETED:
            self.compute.released(uow, done, new, "deleted")
        log.info(
            "instance %s: %s -> %s (%s)",
            new.name,
            old.status.value,
            new.status.value,
            outcome.reason,
        )
        self.compute.notify(uow, done, new, outcome.reason)
        if (
            outcome.failure is not None
            and self.recovery is not None
            and (
                new.status is InstanceStatus.ERROR
                or (new.status is InstanceStatus.SHUTOFF and new.power is Power.RUNNING)
            )
        ):
            self.recovery.on_failure(uow, done, new, outcome.failure)

    def _event(
        self,
        uow: UnitOfWork,
        done: Done,
        inst: Instance | None,
        event: GuestEventReport,
        location: Any,
    ) -> None:
        if inst is None or event.incarnation != inst.incarnation:
            return
        if event.kind == "STARTED" and inst.status is InstanceStatus.ACTIVE:
            # running again after its watchdog's reset or a hang's restart: those alarms
            # told of a state that is over
            ended = instance_faults.cleared_after_start(inst, self.clock.now(), location)
            self.compute.alarm(uow, done, ended)
            return
        kind = EVENT_FAULTS.get(event.kind)
        if kind is None:
            return
        now = self.clock.now()
        detail = event.detail or event.kind.lower()
        uow.compute.add_action(
            InstanceAction(
                inst.id,
                event.kind.lower(),
                f"req-{uuid.uuid4()}",
                "hypervisor",
                now,
                now,
                "success",
                detail,
            )
        )
        self.compute.alarm(uow, done, [instance_faults.raised(inst, kind, detail, now, location)])
        if kind is InstanceFault.WATCHDOG and inst.status is InstanceStatus.ACTIVE:
            self.compute.notify(uow, done, inst, f"watchdog expired: {detail}", "watchdog")
        if kind is InstanceFault.HUNG and self.recovery is not None and inst.task_state is None:
            fresh = uow.compute.instance_for_update(inst.id)
            self.recovery.on_failure(uow, done, fresh, f"guest hung: {detail}")


def _capacity(h: HostResources) -> tuple[object, ...]:
    return (
        h.vcpus,
        h.ram_mib,
        h.disk_gib,
        h.cpu_ratio,
        h.ram_ratio,
        h.disk_ratio,
        tuple(sorted(h.traits)),
        h.hypervisor,
    )


def _observation(g: GuestReport) -> Observation:
    return Observation(g.state, g.incarnation, g.rebooted, g.detail)


def parse_report(host: str, body: Mapping[str, Any]) -> HostReport:
    """The agent's report as JSON -> HostReport; ValueError/KeyError on a malformed one."""
    guests: Sequence[Mapping[str, Any]] = body.get("guests", ())
    events: Sequence[Mapping[str, Any]] = body.get("events", ())
    return HostReport(
        host,
        tuple(
            GuestReport(
                str(g["id"]),
                int(g["incarnation"]),
                Seen(g["state"]),
                int(g.get("rebooted", 0)),
                str(g.get("detail", "")),
            )
            for g in guests
        ),
        tuple(
            GuestEventReport(
                str(e["id"]), int(e["incarnation"]), str(e["kind"]), str(e.get("detail", ""))
            )
            for e in events
        ),
        body.get("resources"),
        body.get("console"),
        tuple(body.get("migrations") or ()),
    )
