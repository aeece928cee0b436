"""Maintenance sessions (issue 19, VNF-11), after OpenStack Fenix: the model. Pure data.

A session empties hosts one after the other before each goes into maintenance, telling each
affected VNF's VNFM at every step and taking its answers:

  MAINTENANCE -> SCALE_IN (optional) -> PREPARE_MAINTENANCE -> PLANNED_MAINTENANCE (host by
  host: PENDING -> NOTIFIED -> IN_MAINTENANCE -> DONE) -> MAINTENANCE_COMPLETE
  (ABORTED at any step on an operator's word; FAILED when it can no longer be done)

A VNFM answers per session state (`ACK_<STATE>`, `NACK_<STATE>`) and per instance
(`MIGRATE`: vimha migrates it by its policy; `OWN_ACTION`: the VNFM takes it off the host
itself; `EVICTION`: it may be stopped, then it is rebuilt elsewhere). Without an answer by
the deadline, the instance's default applies: MIGRATE where its policy allows a migration,
EVICTION otherwise (an instance whose migration is forbidden is never migrated).

The session is persisted as one document written only by the controller holding the
singleton role; what the API receives (answers, abort, a host's maintenance done) is
appended as `Input`s, which the next round reads: a controller restarted, or another
holder, goes on from the stored session and inputs (`domain/maintenance_flow.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from vimha.domain.clock import iso, parse_iso


class Phase(StrEnum):
    """The session's state (Fenix's names)."""

    MAINTENANCE = "MAINTENANCE"
    SCALE_IN = "SCALE_IN"
    PREPARE_MAINTENANCE = "PREPARE_MAINTENANCE"
    PLANNED_MAINTENANCE = "PLANNED_MAINTENANCE"
    MAINTENANCE_COMPLETE = "MAINTENANCE_COMPLETE"
    ABORTED = "ABORTED"
    FAILED = "FAILED"


FINAL = frozenset({Phase.MAINTENANCE_COMPLETE, Phase.ABORTED, Phase.FAILED})
# The states a VNFM acknowledges (ACK_<state>) or refuses (NACK_<state>).
ANSWERED = (
    Phase.MAINTENANCE,
    Phase.SCALE_IN,
    Phase.PREPARE_MAINTENANCE,
    Phase.PLANNED_MAINTENANCE,
)


class HostPhase(StrEnum):
    PENDING = "PENDING"  # not its turn yet
    NOTIFIED = "NOTIFIED"  # its instances' VNFMs told; emptied as answers or the deadline come
    IN_MAINTENANCE = "IN_MAINTENANCE"  # empty; health MAINTENANCE until done and answering
    DONE = "DONE"
    SKIPPED = "SKIPPED"  # the session ended before its turn


class Action(StrEnum):
    """What happens to an instance on a host being emptied (Fenix's instance actions)."""

    MIGRATE = "MIGRATE"
    OWN_ACTION = "OWN_ACTION"
    EVICTION = "EVICTION"


class HostMode(StrEnum):
    """How a host of a session is flagged for the rest of vimha (`host_maintenance`)."""

    DRAINING = "draining"  # being emptied: no new instance (health unchanged)
    MAINTENANCE = "maintenance"  # empty: health MAINTENANCE, no failure alarm, no fencing


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """An instance of a host to empty, as the session plans it and tells its VNFM."""

    instance_id: str
    name: str
    vnf_id: str | None
    host: str
    policy: str  # forbidden, live, cold
    default: Action
    allowed: tuple[Action, ...]
    kind: str | None = None  # the migration kind its policy allows (live, cold), if any
    target: str | None = None  # where the plan expects it (None: unknown or unplaceable)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "instanceId": self.instance_id,
            "name": self.name,
            "vnfId": self.vnf_id,
            "host": self.host,
            "migrationPolicy": self.policy,
            "defaultAction": self.default.value,
            "allowedActions": [a.value for a in self.allowed],
            "migrationKind": self.kind,
            "expectedHost": self.target,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InstancePlan:
        return cls(
            d["instanceId"],
            d.get("name", ""),
            d.get("vnfId"),
            d["host"],
            d.get("migrationPolicy", "live"),
            Action(d["defaultAction"]),
            tuple(Action(a) for a in d.get("allowedActions", ())),
            d.get("migrationKind"),
            d.get("expectedHost"),
            d.get("reason", ""),
        )


@dataclass(frozen=True, slots=True)
class Plan:
    """What a session would do, host by host (the dry run), and why it cannot, if it
    cannot (`refusals`: nothing moves)."""

    hosts: tuple[tuple[str, tuple[InstancePlan, ...]], ...]
    refusals: tuple[str, ...] = ()

    @property
    def feasible(self) -> bool:
        return not self.refusals

    def to_dict(self) -> dict[str, Any]:
        return {
            "feasible": self.feasible,
            "refusals": list(self.refusals),
            "hosts": [
                {"host": h, "instances": [i.to_dict() for i in items]} for h, items in self.hosts
            ],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Plan:
        return cls(
            tuple(
                (h["host"], tuple(InstancePlan.from_dict(i) for i in h.get("instances", ())))
                for h in d.get("hosts", ())
            ),
            tuple(d.get("refusals", ())),
        )


@dataclass(frozen=True, slots=True)
class Acting:
    """What the session started for an instance of the host being emptied."""

    action: Action
    at: datetime
    step: str = ""  # migrate; evict: stop, rebuild; own: waiting for the VNFM
    tries: int = 0  # migrations that failed
    retry_at: datetime | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action.value,
            "at": iso(self.at),
            "step": self.step,
            "tries": self.tries,
            "retryAt": iso(self.retry_at) if self.retry_at else None,
            "note": self.note,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Acting:
        return cls(
            Action(d["action"]),
            parse_iso(d["at"]),
            d.get("step", ""),
            int(d.get("tries", 0)),
            parse_iso(d["retryAt"]) if d.get("retryAt") else None,
            d.get("note", ""),
        )


@dataclass(frozen=True, slots=True)
class Step:
    at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    hosts: tuple[str, ...]
    start_at: datetime
    state: Phase
    created_by: str
    created_at: datetime
    updated_at: datetime
    answer_window: float = 30.0  # seconds VNFMs have to answer each step
    host_window: float | None = None  # seconds a host stays in maintenance (None: until done)
    scale_in: bool = False
    host_states: Mapping[str, HostPhase] = field(default_factory=dict)
    current: str | None = None  # the host being emptied or maintained
    since: datetime | None = None  # when the current state (or host phase) began
    deadline: datetime | None = None  # answers awaited until
    told: frozenset[str] = frozenset()  # "<state>:<host>:<vnf>" already notified
    acting: Mapping[str, Acting] = field(default_factory=dict)  # instance id -> what runs
    vnfs: tuple[str, ...] = ()  # VNFs with instances on the session's hosts (at creation)
    plan: Plan = field(default_factory=lambda: Plan(()))
    history: tuple[Step, ...] = ()
    reason: str = ""  # why it ended (completed, aborted, failed)
    waiting: str = ""  # what it waits for now (shown)
    version: int = 0

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def log(self, now: datetime, reason: str) -> Session:
        return replace(self, history=(*self.history, Step(now, reason)), updated_at=now)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "hosts": list(self.hosts),
            "startAt": iso(self.start_at),
            "state": self.state.value,
            "createdBy": self.created_by,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "answerWindow": self.answer_window,
            "hostWindow": self.host_window,
            "scaleIn": self.scale_in,
            "hostStates": {h: s.value for h, s in self.host_states.items()},
            "currentHost": self.current,
            "since": iso(self.since) if self.since else None,
            "deadline": iso(self.deadline) if self.deadline else None,
            "told": sorted(self.told),
            "acting": {k: v.to_dict() for k, v in self.acting.items()},
            "vnfs": list(self.vnfs),
            "plan": self.plan.to_dict(),
            "history": [{"at": iso(s.at), "reason": s.reason} for s in self.history],
            "reason": self.reason,
            "waiting": self.waiting,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Session:
        return cls(
            id=d["id"],
            hosts=tuple(d["hosts"]),
            start_at=parse_iso(d["startAt"]),
            state=Phase(d["state"]),
            created_by=d.get("createdBy", ""),
            created_at=parse_iso(d["createdAt"]),
            updated_at=parse_iso(d["updatedAt"]),
            answer_window=float(d.get("answerWindow", 30.0)),
            host_window=d.get("hostWindow"),
            scale_in=bool(d.get("scaleIn", False)),
            host_states={h: HostPhase(s) for h, s in (d.get("hostStates") or {}).items()},
            current=d.get("currentHost"),
            since=parse_iso(d["since"]) if d.get("since") else None,
            deadline=parse_iso(d["deadline"]) if d.get("deadline") else None,
            told=frozenset(d.get("told", ())),
            acting={k: Acting.from_dict(v) for k, v in (d.get("acting") or {}).items()},
            vnfs=tuple(d.get("vnfs", ())),
            plan=Plan.from_dict(d.get("plan") or {}),
            history=tuple(Step(parse_iso(s["at"]), s["reason"]) for s in d.get("history", ())),
            reason=d.get("reason", ""),
            waiting=d.get("waiting", ""),
            version=int(d.get("version", 0)),
        )


class InputKind(StrEnum):
    ANSWER = "answer"  # a VNFM's answer (state ACK/NACK, instance actions)
    ABORT = "abort"  # an operator aborts the session
    HOST_DONE = "host-done"  # an operator says a host's maintenance is finished


@dataclass(frozen=True, slots=True)
class Input:
    """What the API received for a session; facts the next round reads (append-only)."""

    seq: int
    session_id: str
    kind: InputKind
    at: datetime
    who: str
    vnf_id: str | None = None
    host: str | None = None
    state: str | None = None  # ACK_<STATE> or NACK_<STATE>
    instance_actions: Mapping[str, Action] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind.value,
            "at": iso(self.at),
            "by": self.who,
            "vnfId": self.vnf_id,
            "host": self.host,
            "state": self.state,
            "instanceActions": {k: v.value for k, v in self.instance_actions.items()},
        }


__all__ = [
    "ANSWERED",
    "FINAL",
    "Acting",
    "Action",
    "HostMode",
    "HostPhase",
    "Input",
    "InputKind",
    "InstancePlan",
    "Phase",
    "Plan",
    "Session",
    "Step",
]
