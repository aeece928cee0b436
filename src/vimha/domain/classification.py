"""Classification of a host's failure from an observed snapshot (FAULT-8), and the alarm that
each outcome raises. `classify_all` is the pure decision; every result carries its reason.

Rows (issue 3):
- one plane lost, others up: link fault, host DEGRADED (ARCH-8: planes act as a bond);
- all planes lost, BMC reachable, power on, hardware healthy: compute node failure (software,
  OS or isolation);
- all planes lost, BMC reports power off or a critical hardware fault: host hardware failure;
- all planes lost, BMC unreachable: host unreachable, cause unknown; when several hosts of
  one rack are so at once: rack failure (shared power or top-of-rack switch);
- planes up, agent alive, compute services failed beyond restart: compute service failure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from vimha.domain.alarms import EventType, FaultyResourceType, Severity
from vimha.domain.errors import InvalidInput


class HealthStatus(StrEnum):
    UP = "UP"
    DEGRADED = "DEGRADED"
    DOWN = "DOWN"
    MAINTENANCE = "MAINTENANCE"
    UNKNOWN = "UNKNOWN"
    FENCED = "FENCED"


class FailureKind(StrEnum):
    LINK_FAULT = "LINK_FAULT"
    COMPUTE_NODE_FAILURE = "COMPUTE_NODE_FAILURE"
    HOST_HW_FAILURE = "HOST_HW_FAILURE"
    HOST_UNREACHABLE = "HOST_UNREACHABLE"
    RACK_FAILURE = "RACK_FAILURE"
    COMPUTE_SERVICE_FAILURE = "COMPUTE_SERVICE_FAILURE"


class HardwareHealth(StrEnum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


@dataclass(frozen=True, slots=True)
class BmcView:
    reachable: bool
    power_on: bool | None = None
    health: HardwareHealth | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class HostSnapshot:
    host: str
    rack: str
    planes: Mapping[str, bool]  # plane name -> up
    bmc: BmcView
    failed_services: tuple[str, ...] = ()
    maintenance: bool = False
    fenced: FailureKind | None = None  # fenced by vimha after this failure


@dataclass(frozen=True, slots=True)
class Classification:
    health: HealthStatus
    kind: FailureKind | None
    reason: str
    lost_planes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AlarmSpec:
    fault_type: str
    probable_cause: str
    event_type: EventType
    severity: Severity
    resource: FaultyResourceType


# Each outcome's alarm, declaratively. LINK_FAULT is raised per lost plane, on the link.
FAILURE_ALARMS: Mapping[FailureKind, AlarmSpec] = {
    FailureKind.LINK_FAULT: AlarmSpec(
        "NETWORK_PLANE_DOWN",
        "no heartbeat on this network plane",
        EventType.COMMUNICATIONS_ALARM,
        Severity.MAJOR,
        FaultyResourceType.NETWORK,
    ),
    FailureKind.COMPUTE_NODE_FAILURE: AlarmSpec(
        "COMPUTE_NODE_FAILURE",
        "node software, OS failure or isolation (hardware healthy)",
        EventType.PROCESSING_ERROR_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.COMPUTE,
    ),
    FailureKind.HOST_HW_FAILURE: AlarmSpec(
        "HOST_HW_FAILURE",
        "host hardware failure reported by its BMC",
        EventType.EQUIPMENT_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.COMPUTE,
    ),
    FailureKind.HOST_UNREACHABLE: AlarmSpec(
        "HOST_UNREACHABLE",
        "host and its BMC unreachable, cause unknown",
        EventType.COMMUNICATIONS_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.COMPUTE,
    ),
    FailureKind.RACK_FAILURE: AlarmSpec(
        "RACK_FAILURE",
        "several hosts of the rack unreachable with their BMCs: shared power or top-of-rack switch",
        EventType.EQUIPMENT_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.NETWORK,
    ),
    FailureKind.COMPUTE_SERVICE_FAILURE: AlarmSpec(
        "COMPUTE_SERVICE_FAILURE",
        "compute services failed beyond restart",
        EventType.PROCESSING_ERROR_ALARM,
        Severity.CRITICAL,
        FaultyResourceType.COMPUTE,
    ),
}

if set(FAILURE_ALARMS) != set(FailureKind):
    raise InvalidInput("FAILURE_ALARMS must map every FailureKind")


def classify(snap: HostSnapshot, rack_outage: bool = False) -> Classification:
    """One host's classification; `rack_outage` says whether its rack is failing as a whole."""
    h = snap.host
    if snap.fenced is not None and not any(snap.planes.values()):
        return Classification(
            HealthStatus.FENCED,
            snap.fenced,
            f"{h} is fenced (powered off through its BMC by vimha) after {snap.fenced.value}",
        )
    if snap.maintenance:
        return Classification(HealthStatus.MAINTENANCE, None, f"{h} is in maintenance")
    lost = tuple(sorted(p for p, up in snap.planes.items() if not up))
    if not snap.planes:
        return Classification(HealthStatus.UNKNOWN, None, f"{h} has no network plane declared")
    if len(lost) < len(snap.planes):
        if snap.failed_services:
            services = ", ".join(snap.failed_services)
            return Classification(
                HealthStatus.DOWN,
                FailureKind.COMPUTE_SERVICE_FAILURE,
                f"{h}: services failed beyond restart: {services}",
                lost,
            )
        if lost:
            return Classification(
                HealthStatus.DEGRADED,
                FailureKind.LINK_FAULT,
                f"{h}: plane(s) {', '.join(lost)} lost, "
                f"{len(snap.planes) - len(lost)} still up: link fault, not a node failure",
                lost,
            )
        return Classification(HealthStatus.UP, None, f"{h}: every plane up")
    bmc = snap.bmc
    if not bmc.reachable:
        if rack_outage:
            return Classification(
                HealthStatus.DOWN,
                FailureKind.RACK_FAILURE,
                f"{h}: all planes and BMC unreachable, like other hosts of rack {snap.rack}",
                lost,
            )
        return Classification(
            HealthStatus.DOWN,
            FailureKind.HOST_UNREACHABLE,
            f"{h}: all planes lost and BMC unreachable: cause unknown",
            lost,
        )
    if bmc.power_on is False or bmc.health is HardwareHealth.CRITICAL:
        why = "power off" if bmc.power_on is False else f"critical hardware ({bmc.detail})"
        return Classification(
            HealthStatus.DOWN,
            FailureKind.HOST_HW_FAILURE,
            f"{h}: all planes lost, BMC reports {why}: host hardware failure",
            lost,
        )
    return Classification(
        HealthStatus.DOWN,
        FailureKind.COMPUTE_NODE_FAILURE,
        f"{h}: all planes lost, BMC reachable, power on, hardware healthy: node software, "
        "OS or isolation",
        lost,
    )


def classify_all(
    snapshots: Sequence[HostSnapshot], rack_threshold: int = 2
) -> dict[str, Classification]:
    """Classify every host; `rack_threshold` or more hosts of one rack unreachable with
    their BMCs at once point at the rack."""
    unreachable = Counter(
        s.rack
        for s in snapshots
        if s.planes
        and not any(s.planes.values())
        and not s.bmc.reachable
        and s.fenced is None
        and not s.maintenance
    )
    failing = {rack for rack, n in unreachable.items() if rack and n >= rack_threshold}
    return {s.host: classify(s, s.rack in failing) for s in snapshots}
