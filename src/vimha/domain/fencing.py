"""Fencing (FAULT-8, issue 3): before anything of a failed host is recovered elsewhere, the
host is powered off through its BMC and the power-off is confirmed by reading back.

`decide_fencing(host, classification, state, policy, has_bmc, now)` is pure: it returns the
next state of the host's fencing and, when one is due, the action to take with its reason.
Hosts whose state is unknown (every plane lost) are fenced after `policy.delay`; a host that
answers again is no longer fenced. Without confirmation there is no recovery: the state says
FAILED, the fencing alarm says why, and the attempt is repeated every `policy.retry`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from vimha.domain.alarms import EventType, FaultEvent, FaultyResourceType, Location, Severity
from vimha.domain.classification import Classification, FailureKind, HealthStatus
from vimha.domain.errors import InvalidInput

# Every plane lost: the host may still be running (isolated) and writing to shared storage.
NEEDS_FENCING = frozenset(
    {
        FailureKind.COMPUTE_NODE_FAILURE,
        FailureKind.HOST_HW_FAILURE,
        FailureKind.HOST_UNREACHABLE,
        FailureKind.RACK_FAILURE,
    }
)

FENCING_FAULT_TYPE = "FENCING_FAILED"


class FencePhase(StrEnum):
    NONE = "NONE"  # nothing to fence
    PENDING = "PENDING"  # failed, waiting out the fencing delay
    IN_PROGRESS = "IN_PROGRESS"  # ForceOff sent, reading back
    CONFIRMED = "CONFIRMED"  # power-off confirmed: safe to recover elsewhere
    FAILED = "FAILED"  # not confirmed: no recovery; retried


@dataclass(frozen=True, slots=True)
class FencePolicy:
    enabled: bool = True
    delay: float = 1.0  # seconds a host stays failed before it is fenced
    retry: float = 10.0  # seconds between attempts after a failed one
    confirm_within: float = 10.0  # seconds to read back the power-off

    def __post_init__(self) -> None:
        if self.delay < 0 or self.retry <= 0 or self.confirm_within <= 0:
            raise InvalidInput("fencing: delay >= 0, retry > 0 and confirm_within > 0 required")


@dataclass(frozen=True, slots=True)
class FenceState:
    phase: FencePhase = FencePhase.NONE
    kind: FailureKind | None = None  # the failure that called for fencing
    since: float = 0.0  # monotonic time of the phase change
    attempts: int = 0
    detail: str = ""

    @property
    def fenced(self) -> bool:
        return self.phase is FencePhase.CONFIRMED

    @property
    def recoverable(self) -> bool:
        """Whether the host's workloads may be recovered elsewhere."""
        return self.phase is FencePhase.CONFIRMED


class FenceAction(StrEnum):
    FENCE = "FENCE"  # send ForceOff through the BMC and confirm
    GIVE_UP = "GIVE_UP"  # cannot fence (no BMC): record it, raise the alarm


@dataclass(frozen=True, slots=True)
class FenceDecision:
    state: FenceState
    action: FenceAction | None = None
    reason: str = ""


def decide_fencing(
    host: str,
    cls: Classification,
    state: FenceState,
    policy: FencePolicy,
    has_bmc: bool,
    now: float,
) -> FenceDecision:
    if state.phase is FencePhase.IN_PROGRESS:
        return FenceDecision(state)  # the attempt's result decides
    if cls.health is HealthStatus.FENCED:
        return FenceDecision(state)
    failed = cls.health is HealthStatus.DOWN and cls.kind in NEEDS_FENCING
    if not failed:
        # A host that answers (on any plane) is running: no longer fenced. UNKNOWN (not heard
        # since a controller restart) and MAINTENANCE keep whatever was decided.
        answers = cls.health in (HealthStatus.UP, HealthStatus.DEGRADED) or (
            cls.kind is FailureKind.COMPUTE_SERVICE_FAILURE
        )
        if state.phase is FencePhase.NONE or not answers:
            return FenceDecision(state)
        return FenceDecision(FenceState(since=now), reason=f"{host} answers again: not fenced")
    if not policy.enabled:
        return FenceDecision(state)
    if state.phase is FencePhase.NONE:
        state = FenceState(FencePhase.PENDING, cls.kind, now)
    elif state.phase in (FencePhase.PENDING, FencePhase.FAILED) and state.kind is not cls.kind:
        state = replace(state, kind=cls.kind)  # e.g. one unreachable host became a rack
    # The delay damps a blip of silence; a host its BMC reports powered off or with critical
    # hardware is no blip: fenced at once (a ForceOff of a host already off confirms it).
    damped = cls.kind is not FailureKind.HOST_HW_FAILURE
    if state.phase is FencePhase.PENDING and damped and now - state.since < policy.delay:
        return FenceDecision(state)
    if state.phase is FencePhase.FAILED and now - state.since < policy.retry:
        return FenceDecision(state)
    if state.phase is FencePhase.CONFIRMED:
        return FenceDecision(state)
    if not has_bmc:
        if state.phase is FencePhase.FAILED:
            return FenceDecision(state)
        why = f"{host} cannot be fenced: no BMC declared; its workloads will not be recovered"
        return FenceDecision(
            FenceState(FencePhase.FAILED, cls.kind, now, state.attempts + 1, why),
            FenceAction.GIVE_UP,
            why,
        )
    return FenceDecision(
        FenceState(FencePhase.IN_PROGRESS, cls.kind, now, state.attempts + 1),
        FenceAction.FENCE,
        f"{host}: {cls.reason}; fencing through its BMC (ForceOff) before any recovery",
    )


def after_attempt(state: FenceState, confirmed: bool, detail: str, now: float) -> FenceState:
    """The state once a ForceOff attempt has ended."""
    phase = FencePhase.CONFIRMED if confirmed else FencePhase.FAILED
    return replace(state, phase=phase, since=now, detail=detail)


def fencing_alarm(
    host: str, state: FenceState, location: Location, now: datetime, raised: bool
) -> FaultEvent:
    """FENCING_FAILED on the host: raised while fencing is unconfirmed, cleared otherwise."""
    return FaultEvent(
        managed_object_id=host,
        fault_type=FENCING_FAULT_TYPE,
        probable_cause="power-off through the BMC not confirmed: no recovery until fenced",
        perceived_severity=Severity.CRITICAL if raised else Severity.CLEARED,
        event_type=EventType.EQUIPMENT_ALARM,
        event_time=now,
        faulty_resource_type=FaultyResourceType.COMPUTE,
        vim_level_resource_type="host",
        resource_id=host,
        fault_details=(state.detail or f"fencing {state.phase.value.lower()}",),
        location=location,
        source="fencing",
    )
