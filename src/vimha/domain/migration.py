"""Migration of an instance (issue 19, VNF-7). Pure: the record of one migration, which kind
an instance's policy allows between two hosts, and the interruption a probe measured.

- The policy (`MigrationPolicy`, per VDU): `forbidden` (never moved while it runs: its VNFM
  moves its service, then it is stopped and rebuilt elsewhere), `live` with the tolerated
  interruption (`maxInterruptionMs`; none stated: any), `cold` (stopped, its disk copied,
  started on the destination).
- The kind is chosen before anything moves (`choose`): live where both hypervisors can and
  the interruption expected of a live migration (what the last ones of that hypervisor
  measured, else its nominal figure) is within the bound; cold where the policy is cold, or
  the bound tolerates what a cold migration is expected to take (or states none). A
  migration that cannot meet its bound is not started at all: the reason says why.
- Every migration's interruption is measured by a probe on the guest's port (the longest
  time between two answers, `longest_gap`) and recorded; one beyond its bound is alarmed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from vimha.domain.clock import iso, parse_iso
from vimha.domain.compute import Migration, MigrationPolicy


class Kind(StrEnum):
    LIVE = "live"
    COLD = "cold"


class State(StrEnum):
    PREPARING = "PREPARING"  # the destination prepares (files, the incoming guest)
    READY = "READY"  # the destination is ready: the source goes
    RUNNING = "RUNNING"  # the source migrates (live) or stops and exports (cold)
    TRANSFERRED = "TRANSFERRED"  # cold: the guest's state is uploaded; the destination starts it
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


FINAL = frozenset({State.COMPLETED, State.FAILED, State.CANCELLED})
# The phases an agent reports, and the state each one moves a migration to (from which).
PHASES: Mapping[str, tuple[frozenset[State], State]] = {
    "prepared": (frozenset({State.PREPARING}), State.READY),
    "running": (frozenset({State.READY}), State.RUNNING),
    "exported": (frozenset({State.READY, State.RUNNING}), State.TRANSFERRED),
    "migrated": (frozenset({State.READY, State.RUNNING}), State.COMPLETED),
    "started": (frozenset({State.TRANSFERRED}), State.COMPLETED),
}


@dataclass(frozen=True, slots=True)
class MigrationRecord:
    """One migration of one instance, from its start to its end; kept afterwards."""

    id: str
    instance_id: str
    instance_name: str
    vnf_id: str | None
    kind: Kind
    source: str
    dest: str
    state: State
    reason: str  # why this kind (the policy's decision), and who asked
    requested_by: str
    created_at: datetime
    updated_at: datetime
    bound_ms: int | None = None  # the tolerated interruption, for a live policy
    hypervisor: str = ""  # the source's hypervisor driver (process, libvirt)
    session_id: str | None = None  # the maintenance session that asked for it
    incarnation: int = 1
    target: Mapping[str, Any] = field(default_factory=dict)  # what the destination prepared
    state_digest: str | None = None  # cold: the exported guest state's sha256 (`state_key`)
    interruption_ms: float | None = None  # measured by the probe on the guest's port
    downtime_ms: float | None = None  # as the hypervisor measured it (libvirt), if it does
    stopped: bool = False  # cold: the source stopped the guest (a failure starts it again)
    detail: str = ""  # the last phase's detail, or why it failed
    finished_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.state not in FINAL

    @property
    def broke_bound(self) -> bool:
        return (
            self.bound_ms is not None
            and self.interruption_ms is not None
            and self.interruption_ms > self.bound_ms
        )

    def evolve(self, now: datetime, **changes: Any) -> MigrationRecord:
        return replace(self, updated_at=now, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instanceId": self.instance_id,
            "instanceName": self.instance_name,
            "vnfId": self.vnf_id,
            "kind": self.kind.value,
            "source": self.source,
            "dest": self.dest,
            "state": self.state.value,
            "reason": self.reason,
            "requestedBy": self.requested_by,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at),
            "boundMs": self.bound_ms,
            "hypervisor": self.hypervisor,
            "sessionId": self.session_id,
            "incarnation": self.incarnation,
            "target": dict(self.target),
            "stateDigest": self.state_digest,
            "interruptionMs": self.interruption_ms,
            "downtimeMs": self.downtime_ms,
            "stopped": self.stopped,
            "detail": self.detail,
            "finishedAt": iso(self.finished_at) if self.finished_at else None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MigrationRecord:
        return cls(
            id=d["id"],
            instance_id=d["instanceId"],
            instance_name=d.get("instanceName", ""),
            vnf_id=d.get("vnfId"),
            kind=Kind(d["kind"]),
            source=d["source"],
            dest=d["dest"],
            state=State(d["state"]),
            reason=d.get("reason", ""),
            requested_by=d.get("requestedBy", ""),
            created_at=parse_iso(d["createdAt"]),
            updated_at=parse_iso(d["updatedAt"]),
            bound_ms=d.get("boundMs"),
            hypervisor=d.get("hypervisor", ""),
            session_id=d.get("sessionId"),
            incarnation=int(d.get("incarnation", 1)),
            target=dict(d.get("target") or {}),
            state_digest=d.get("stateDigest"),
            interruption_ms=d.get("interruptionMs"),
            downtime_ms=d.get("downtimeMs"),
            stopped=bool(d.get("stopped", False)),
            detail=d.get("detail", ""),
            finished_at=parse_iso(d["finishedAt"]) if d.get("finishedAt") else None,
        )


@dataclass(frozen=True, slots=True)
class HypervisorAbility:
    """What a host's hypervisor can do for a migration (from its agent's report)."""

    name: str  # process, libvirt
    live: bool  # live migration usable (libvirt; CRIU where `criu check` passes)
    why_not_live: str = ""


@dataclass(frozen=True, slots=True)
class Choice:
    kind: Kind | None  # None: not migrated (the reason says why)
    reason: str
    expected_ms: float | None = None  # the interruption expected of the chosen kind

    @property
    def allowed(self) -> bool:
        return self.kind is not None


def choose(
    policy: MigrationPolicy,
    source: HypervisorAbility,
    dest: HypervisorAbility,
    estimates: Mapping[tuple[str, Kind], float],
    wanted: Kind | None = None,
) -> Choice:
    """The kind of migration an instance's policy allows from `source` to `dest`, or why
    none. `estimates`: the interruption (ms) expected per (hypervisor, kind). `wanted`: a
    kind asked for explicitly (an operator's `--live`/`--cold`); it must be allowed too."""
    if policy.policy is Migration.FORBIDDEN:
        return Choice(None, "its migration policy is forbidden: it is never migrated")
    if source.name != dest.name:
        return Choice(
            None, f"the hypervisors differ ({source.name} on the source, {dest.name} there)"
        )
    bound = policy.max_interruption_ms
    live_ms = estimates.get((source.name, Kind.LIVE))
    cold_ms = estimates.get((source.name, Kind.COLD))
    why_live = ""
    if policy.policy is Migration.LIVE and wanted is not Kind.COLD:
        if not (source.live and dest.live):
            why_live = (
                f"live migration is not available on {source.name}: "
                f"{source.why_not_live or dest.why_not_live or 'not supported'}"
            )
        elif bound is not None and live_ms is not None and live_ms > bound:
            why_live = (
                f"a live migration on {source.name} is expected to interrupt it "
                f"{live_ms:.0f} ms, more than its {bound} ms"
            )
        else:
            bounded = f"within {bound} ms" if bound is not None else "no bound stated"
            return Choice(Kind.LIVE, f"policy live ({bounded})", live_ms)
        if wanted is Kind.LIVE:
            return Choice(None, f"{why_live}: not started live")
    elif wanted is Kind.LIVE:
        return Choice(None, f"its policy is {policy.policy.value}: not migrated live")
    if policy.policy is Migration.COLD:
        return Choice(Kind.COLD, "policy cold", cold_ms)
    # A live policy whose live migration is not possible: cold only if its bound allows it.
    if bound is None:
        return Choice(Kind.COLD, f"{why_live}; no bound stated: cold is acceptable", cold_ms)
    if cold_ms is not None and cold_ms <= bound:
        return Choice(
            Kind.COLD,
            f"{why_live}; a cold migration is expected to take {cold_ms:.0f} ms, "
            f"within its {bound} ms",
            cold_ms,
        )
    expected = f"{cold_ms:.0f} ms" if cold_ms is not None else "an unknown time"
    return Choice(
        None,
        f"{why_live}; a cold migration would interrupt it {expected}, more than its "
        f"{bound} ms: not migrated",
    )


def estimate(
    history: Iterable[MigrationRecord],
    nominal: Mapping[tuple[str, Kind], float],
    keep: int = 20,
    least: int = 3,
) -> dict[tuple[str, Kind], float]:
    """The interruption expected per (hypervisor, kind): the 90th percentile of the last
    `keep` measured migrations of that kind, once there are `least` of them; else the
    nominal figure."""
    out = dict(nominal)
    measured: dict[tuple[str, Kind], list[float]] = {}
    for rec in sorted(history, key=lambda r: r.created_at, reverse=True):
        if rec.state is State.COMPLETED and rec.interruption_ms is not None and rec.hypervisor:
            seen = measured.setdefault((rec.hypervisor, rec.kind), [])
            if len(seen) < keep:
                seen.append(rec.interruption_ms)
    for key, values in measured.items():
        if len(values) >= least:
            out[key] = percentile(values, 0.9)
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
    return ordered[rank - 1]


def state_key(migration_id: str) -> str:
    """Where a cold migration's guest state is kept in the image store: under its own key,
    not its digest. Guests of one image often export the same bytes; under a shared key,
    the first migration to end dropped the state another was still fetching."""
    return f"migration-{migration_id}"


def longest_gap(answers: Sequence[float], start: float, end: float) -> float:
    """The interruption a probe saw, in ms: the longest time without an answer between
    `start` and `end` (seconds on one clock), counting from `start` to the first answer
    and from the last answer to `end`. Its resolution is the probe's interval."""
    points = sorted(t for t in answers if start <= t <= end)
    if not points:
        return (end - start) * 1000.0
    edges = [start, *points, end]
    return max(b - a for a, b in itertools.pairwise(edges)) * 1000.0


def verdict(record: MigrationRecord) -> str | None:
    """Why a measured migration is alarmed (it broke its bound), or None."""
    if not record.broke_bound:
        return None
    assert record.interruption_ms is not None
    return (
        f"{record.kind.value} migration {record.id} of {record.instance_name} from "
        f"{record.source} to {record.dest} interrupted it {record.interruption_ms:.0f} ms, "
        f"more than its {record.bound_ms} ms"
    )


def advance(record: MigrationRecord, phase: str, now: datetime) -> MigrationRecord | None:
    """The record once an agent reported `phase`; None when the phase does not apply to
    its state (a repeat, or out of order: ignored)."""
    rule = PHASES.get(phase)
    if rule is None:
        return None
    sources, to = rule
    if record.state not in sources:
        return None
    if phase == "exported" and record.kind is not Kind.COLD:
        return None
    if phase == "migrated" and record.kind is not Kind.LIVE:
        return None
    finished = now if to in FINAL else None
    return record.evolve(now, state=to, finished_at=finished)


__all__ = [
    "FINAL",
    "Choice",
    "HypervisorAbility",
    "Kind",
    "MigrationRecord",
    "State",
    "advance",
    "choose",
    "estimate",
    "longest_gap",
    "percentile",
    "state_key",
    "verdict",
]
