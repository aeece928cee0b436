"""Maintenance sessions (issue 19, VNF-11): created through the API (planned and refused with
the reasons before anything moves; a dry run only shows the plan), run by the controller
holding the singleton role, one round every half second:

  load the session -> a snapshot of the world (instances, VNFs and budgets, hosts, this
  session's migrations, the inputs received) -> domain/maintenance_flow.advance -> carry out
  each act (tell a VNFM, its maintenance alarm, flag a host, migrate, stop, rebuild, start)
  -> save the session (its version compared).

The session and its inputs are stored: a controller restarted, or the next holder, takes the
session where it was. Every controller reads the hosts taken out (`host_maintenance`) each
round: placement gives them no new instance, the health loop shows MAINTENANCE for those in
maintenance and raises no failure alarm for their planned downtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vimha.config_vnf import MigrationConfig
from vimha.domain.affinity import Membership
from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Severity
from vimha.domain.budget import DisruptionBudget
from vimha.domain.clock import iso
from vimha.domain.compute import Instance, InstanceStatus
from vimha.domain.errors import Conflict, InvalidInput, NotFound, VimhaError
from vimha.domain.instance_states import Request
from vimha.domain.maintenance import (
    ANSWERED,
    Action,
    HostMode,
    HostPhase,
    Input,
    InputKind,
    InstancePlan,
    Phase,
    Plan,
    Session,
)
from vimha.domain.maintenance_flow import (
    Act,
    ActKind,
    HostInfo,
    VnfInfo,
    World,
    advance,
    failed,
)
from vimha.domain.maintenance_plan import instance_plan, plan
from vimha.domain.migration import Choice, MigrationRecord, choose
from vimha.domain.placement import Candidate, PlacementRequest
from vimha.domain.subscriptions import NotificationType, Subject
from vimha.engine.compute import Done
from vimha.engine.migration import Migrations
from vimha.engine.recovery import Recovery
from vimha.engine.scheduler import Snapshot
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.maintenance")
FAULT_TYPE = "NFVI_OAM_VIRTUALISED_RESOURCE_STATE_CHANGE"


@dataclass(frozen=True, slots=True)
class SessionRequest:
    """A session asked for through the API."""

    hosts: tuple[str, ...]
    start_at: datetime | None = None
    answer_window: float | None = None
    host_window: float | None = None
    scale_in: bool = False
    dry_run: bool = False


class Maintenance:
    def __init__(
        self,
        migrations: Migrations,
        recovery: Recovery,
        config: MigrationConfig,
        holds_singleton: Callable[[], bool],
        hosts: Callable[[], dict[str, HostInfo]],
        on_modes: Callable[[dict[str, HostMode]], None] = lambda modes: None,
    ) -> None:
        self.migrations = migrations
        self.recovery = recovery
        self.compute = migrations.compute
        self.store = self.compute.store
        self.clock = self.compute.clock
        self.config = config
        self.holds_singleton = holds_singleton
        self.hosts = hosts
        self.on_modes = on_modes
        self.modes: dict[str, tuple[HostMode, str]] = {}
        self.wake = asyncio.Event()

    # -- the API's side -------------------------------------------------------------------
    def create(self, ask: SessionRequest, user: str) -> tuple[Session | None, Plan]:
        """Plan a session over `ask.hosts`; a dry run returns the plan only. A session that
        cannot be carried out is refused (Conflict) with every reason, nothing stored."""
        now = self.clock.now()
        hosts = tuple(ask.hosts)
        if not hosts:
            raise InvalidInput("hosts: name at least one host")
        busy = {h: s.id for s in self.store.maintenance.sessions(active=True) for h in s.hosts}
        clash = [f"{h} (session {busy[h]})" for h in hosts if h in busy]
        if clash:
            raise Conflict(f"already in a maintenance session: {', '.join(clash)}")
        found = self.plan(hosts)
        if ask.dry_run:
            return None, found
        if not found.feasible:
            raise Conflict(
                "maintenance refused before anything moved: " + "; ".join(found.refusals)
            )
        vnfs = sorted({i.vnf_id for _, items in found.hosts for i in items if i.vnf_id})
        window = self.config.answer_window if ask.answer_window is None else ask.answer_window
        start = ask.start_at or now
        session = Session(
            str(uuid.uuid4()),
            hosts,
            start,
            Phase.MAINTENANCE,
            user,
            now,
            now,
            answer_window=window,
            host_window=ask.host_window,
            scale_in=ask.scale_in,
            host_states=dict.fromkeys(hosts, HostPhase.PENDING),
            vnfs=tuple(vnfs),
            plan=found,
        ).log(now, f"created by {user}: {', '.join(hosts)} from {iso(start)}")
        self.compute.run(lambda uow, done: uow.maintenance.add_session(session))
        log.warning("maintenance session %s created by %s: %s", session.id, user, hosts)
        self.wake.set()
        return session, found

    def answer(
        self,
        session_id: str,
        vnf_id: str,
        state: str | None,
        actions: dict[str, Action],
        who: str,
    ) -> Input:
        """A VNFM's answer: ACK_/NACK_ a state, an action per instance of its VNF."""
        s = self.store.maintenance.session(session_id)
        if s.final:
            raise Conflict(f"maintenance session {session_id} is {s.state.value}")
        if vnf_id not in s.vnfs:
            raise NotFound(f"VNF {vnf_id} has no instance in maintenance session {session_id}")
        wanted = {f"{k}_{p.value}" for k in ("ACK", "NACK") for p in ANSWERED}
        if state is not None and state not in wanted:
            raise InvalidInput(f"state: {state!r} is not ACK_<STATE> or NACK_<STATE>")
        for iid, action in actions.items():
            try:
                inst = self.store.compute.instance(iid)
            except NotFound:
                raise InvalidInput(f"instanceActions: no instance {iid}") from None
            if inst.spec.vnf_id != vnf_id:
                raise InvalidInput(f"instanceActions: {iid} is not an instance of VNF {vnf_id}")
            if action is Action.MIGRATE:
                choice = self._choice(inst)
                if not choice.allowed:
                    raise InvalidInput(
                        f"instanceActions.{iid}: MIGRATE not possible ({choice.reason}); "
                        "answer OWN_ACTION or EVICTION"
                    )
        return self._input(
            Input(
                0,
                session_id,
                InputKind.ANSWER,
                self.clock.now(),
                who,
                vnf_id,
                None,
                state,
                dict(actions),
            )
        )

    def abort(self, session_id: str, who: str) -> Input:
        s = self.store.maintenance.session(session_id)
        if s.final:
            raise Conflict(f"maintenance session {session_id} is {s.state.value}")
        return self._input(Input(0, session_id, InputKind.ABORT, self.clock.now(), who))

    def host_done(self, session_id: str, host: str, who: str) -> Input:
        s = self.store.maintenance.session(session_id)
        if host not in s.hosts:
            raise NotFound(f"{host} is not a host of maintenance session {session_id}")
        if s.host_states.get(host) is not HostPhase.IN_MAINTENANCE:
            phase = s.host_states.get(host, HostPhase.PENDING).value
            raise Conflict(f"{host} is not in maintenance yet ({phase})")
        item = Input(0, session_id, InputKind.HOST_DONE, self.clock.now(), who, host=host)
        return self._input(item)

    def _input(self, item: Input) -> Input:
        seq = self.compute.run(lambda uow, done: uow.maintenance.add_input(item))
        self.wake.set()
        return Input(
            seq,
            item.session_id,
            item.kind,
            item.at,
            item.who,
            item.vnf_id,
            item.host,
            item.state,
            item.instance_actions,
        )

    def vnf_view(self, session_id: str, vnf_id: str) -> dict[str, Any]:
        """What a VNFM reads of a session (Fenix's project view): its instances concerned
        now, the state and deadline, its answers so far."""
        s = self.store.maintenance.session(session_id)
        if vnf_id not in s.vnfs:
            raise NotFound(f"VNF {vnf_id} has no instance in maintenance session {session_id}")
        host = s.current if s.state is Phase.PLANNED_MAINTENANCE else None
        items = []
        for inst in self.store.compute.instances(vnf_id=vnf_id):
            if host is not None and inst.host != host:
                continue
            if host is None and inst.host not in s.hosts:
                continue
            items.append(instance_plan(inst, inst.host or "", self._choice(inst), None).to_dict())
        answers = [
            i.to_dict() for i in self.store.maintenance.inputs(session_id) if i.vnf_id == vnf_id
        ]
        return {
            "sessionId": s.id,
            "vnfInstanceId": vnf_id,
            "state": s.state.value,
            "host": host,
            "replyDeadline": iso(s.deadline) if s.deadline else None,
            "instances": items,
            "answers": answers,
        }

    # -- the plan -------------------------------------------------------------------------
    def _choice(self, inst: Instance) -> Choice:
        here = self.migrations.ability(inst.host or "")
        return choose(inst.spec.migration, here, here, self.migrations.estimates())

    def plan(self, hosts: Sequence[str]) -> Plan:
        """The session over `hosts` played on a snapshot (domain/maintenance_plan)."""
        scheduler = self.compute.scheduler
        views = scheduler.hosts()
        resources = self.store.compute.hosts()
        candidates = {
            name: Candidate(
                res,
                views[name].health if name in views else "UNKNOWN",
                dict(views[name].location.levels) if name in views else {},
            )
            for name, res in resources.items()
        }
        locations: dict[str, Mapping[str, str]] = {
            name: dict(v.location.levels) for name, v in views.items()
        }
        instances = self.store.compute.instances()
        groups: dict[str, Membership] = {}
        for gid in {g for i in instances for g in i.spec.groups}:
            with contextlib.suppress(NotFound):
                group = self.store.compute.group(gid)
                members = self.store.compute.members(gid)
                groups[gid] = Membership(group, {k: v for k, v in members.items() if v})
        snap = Snapshot(candidates, locations)
        images: dict[str, str | None] = {}
        requests: dict[str, PlacementRequest] = {}
        choices: dict[str, Choice] = {}
        on = set(hosts)
        for inst in instances:
            if inst.host not in on:
                continue
            if inst.spec.image_id not in images:
                try:
                    image = self.store.compute.image(inst.spec.image_id)
                    images[inst.spec.image_id] = image.properties.get("hypervisor_type")
                except NotFound:
                    images[inst.spec.image_id] = None
            hv = images[inst.spec.image_id]
            requests[inst.id] = scheduler.request(snap, inst.spec, hv, {}, instance=inst.id)
            choices[inst.id] = self._choice(inst)
        vnfs = {
            v.id: VnfInfo(v.name, DisruptionBudget.from_descriptor(v.descriptor))
            for v in self.store.compute.vnfs()
        }
        others = frozenset(self.modes)  # taken out by other sessions
        return plan(
            hosts, instances, candidates, locations, groups, requests, choices, vnfs, others
        )

    # -- the loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, every: float = 0.5) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), every)
            self.wake.clear()
            try:
                await asyncio.to_thread(self.refresh)
                if not self.holds_singleton():
                    continue
                for s in await asyncio.to_thread(self.store.maintenance.sessions, True):
                    await asyncio.to_thread(self.round, s.id)
            except VimhaError as exc:
                log.warning("maintenance round: %s (again soon)", exc.detail)
            except Exception:  # the loop must go on; the next round starts afresh
                log.exception("maintenance round failed")

    def refresh(self) -> None:
        """The hosts sessions have taken out, as every controller must see them."""
        modes = self.store.maintenance.host_modes()
        if modes != self.modes:
            self.modes = modes
            self.on_modes({h: m for h, (m, _) in modes.items()})

    def round(self, session_id: str) -> Session:
        s = self.store.maintenance.session(session_id)
        if s.final:
            return s
        out = advance(s, self.world(s))
        new = out.session
        for act in out.acts:
            log.info(
                "maintenance %s: %s %s: %s",
                s.id,
                act.kind.value,
                act.instance_id or act.host or act.vnf_id or "",
                act.reason,
            )
            new = self._act(new, act)
        if new.state is not s.state or new.current != s.current:
            log.warning(
                "maintenance session %s: %s%s",
                s.id,
                new.state.value,
                f" ({new.current})" if new.current else "",
            )
        return self.compute.run(lambda uow, done: uow.maintenance.save_session(s.version, new))

    def world(self, s: Session) -> World:
        instances = {i.id: i for i in self.store.compute.instances()}
        vnfs = {
            v.id: VnfInfo(v.name, DisruptionBudget.from_descriptor(v.descriptor))
            for v in self.store.compute.vnfs()
        }
        migs: dict[str, list[MigrationRecord]] = {}
        for rec in reversed(self.store.maintenance.migrations(session_id=s.id, limit=10_000)):
            migs.setdefault(rec.instance_id, []).append(rec)
        plans: dict[str, InstancePlan] = {}
        if s.state is Phase.PLANNED_MAINTENANCE and s.current is not None:
            for inst in instances.values():
                if inst.host == s.current:
                    plans[inst.id] = instance_plan(inst, s.current, self._choice(inst), None)
        fresh = None
        if s.state is Phase.PREPARE_MAINTENANCE and s.since is None:
            fresh = self.plan(s.hosts)
        return World(
            self.clock.now(),
            instances,
            vnfs,
            self.hosts(),
            self.store.maintenance.inputs(s.id),
            {k: tuple(v) for k, v in migs.items()},
            plans,
            fresh,
        )

    # -- acts -----------------------------------------------------------------------------
    def _act(self, s: Session, act: Act) -> Session:
        now = self.clock.now()
        iid = act.instance_id or ""
        user = f"maintenance {s.id}"
        try:
            if act.kind is ActKind.TELL:
                self._tell(s, act)
            elif act.kind in (ActKind.ALARM, ActKind.CLEAR):
                self._alarm(s, act)
            elif act.kind is ActKind.FLAG:
                mode = HostMode(act.state) if act.state else None
                host = act.host or ""
                self.compute.run(
                    lambda uow, done: uow.maintenance.set_host_mode(host, mode, s.id, now)
                )
                self.refresh()
            elif act.kind is ActKind.MIGRATE:
                self.migrations.start(iid, user, session_id=s.id)
            elif act.kind is ActKind.STOP:
                self.compute.request(iid, Request.STOP, user)
            elif act.kind is ActKind.START:
                self.compute.request(iid, Request.START, user)
            elif act.kind is ActKind.REBUILD:
                self._rebuild(act, act.state == "keep-stopped")
        except VimhaError as exc:
            log.warning(
                "maintenance %s: %s of %s not done: %s", s.id, act.kind.value, iid, exc.detail
            )
            if iid:
                return failed(s, iid, exc.detail, now)
        return s

    def _rebuild(self, act: Act, keep_stopped: bool) -> None:
        def work(uow: UnitOfWork, done: Done) -> None:
            inst = uow.compute.instance_for_update(act.instance_id or "")
            if inst.host != act.host or inst.status is InstanceStatus.DELETED:
                return  # moved meanwhile
            self.recovery.relocate(
                uow,
                done,
                inst,
                act.reason,
                exclude=True,
                quiet=True,
                action="evict",
                keep_stopped=keep_stopped,
            )

        self.compute.run(work)  # no valid host yet: a VimhaError, tried again later

    def _tell(self, s: Session, act: Act) -> None:
        vnf_id = act.vnf_id or ""
        base = self.compute.base_url
        payload: dict[str, Any] = {
            "sessionId": s.id,
            "state": act.state,
            "vnfInstanceId": vnf_id,
            "hosts": list(s.hosts),
            "host": act.host,
            "maintenanceAt": iso(s.start_at),
            "replyDeadline": iso(act.deadline) if act.deadline else None,
            "reason": act.reason,
            "instances": [i.to_dict() for i in act.instances],
            "_links": {
                "session": {"href": f"{base}/vim/v1/maintenance/{s.id}"},
                "reply": {"href": f"{base}/vim/v1/maintenance/{s.id}/vnfs/{vnf_id}"},
                "vnfInstance": {"href": f"{base}/vim/v1/vnfs/{vnf_id}"},
            },
        }
        kind = NotificationType.VNF_MAINTENANCE
        subject = Subject(kind, object_id=vnf_id)

        def work(uow: UnitOfWork, done: Done) -> None:
            done.jobs += self.compute.faults.notify_in(uow, kind, payload, subject, vnf_id)

        self.compute.run(work)

    def _alarm(self, s: Session, act: Act) -> None:
        """NFVI_OAM_VIRTUALISED_RESOURCE_STATE_CHANGE on the VNF: raised when its VNFM is
        first told (the anticipated time in its details), cleared when the session ends."""
        vnf_id = act.vnf_id or ""
        raised = act.kind is ActKind.ALARM
        event = FaultEvent(
            managed_object_id=vnf_id,
            fault_type=FAULT_TYPE,
            probable_cause=f"maintenance session {s.id}",
            perceived_severity=Severity.WARNING if raised else Severity.CLEARED,
            event_type=EventType.EQUIPMENT_ALARM,
            event_time=self.clock.now(),
            faulty_resource_type=FaultyResourceType.COMPUTE,
            vim_level_resource_type="host",
            resource_id=",".join(s.hosts),
            fault_details=(act.reason, f"anticipated time: {iso(s.start_at)}"),
            source="maintenance",
        )
        self.compute.run(lambda uow, done: self.compute.alarm(uow, done, [event]))

    def view(self, s: Session) -> dict[str, Any]:
        base = self.compute.base_url
        out = s.to_dict()
        out.pop("told", None)
        out["migrations"] = [
            m.to_dict() for m in self.store.maintenance.migrations(session_id=s.id)
        ]
        out["inputs"] = [i.to_dict() for i in self.store.maintenance.inputs(s.id)]
        out["_links"] = {"self": {"href": f"{base}/vim/v1/maintenance/{s.id}"}}
        return out


__all__ = ["FAULT_TYPE", "Maintenance", "SessionRequest"]
