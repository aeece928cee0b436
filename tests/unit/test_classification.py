"""classify(): every row of the issue's table, with its alarm (FAULT-8, ARCH-8)."""

from __future__ import annotations

import pytest

from vimha.domain.alarms import Severity
from vimha.domain.classification import (
    FAILURE_ALARMS,
    BmcView,
    FailureKind,
    HardwareHealth,
    HealthStatus,
    HostSnapshot,
    classify,
    classify_all,
)

OK_BMC = BmcView(reachable=True, power_on=True, health=HardwareHealth.OK)
BOTH = {"mgmt": True, "storage": True}
NONE = {"mgmt": False, "storage": False}


def snap(host: str = "cmp-1", rack: str = "r1", **kw: object) -> HostSnapshot:
    fields: dict[str, object] = {"planes": BOTH, "bmc": OK_BMC}
    fields.update(kw)
    return HostSnapshot(host, rack, **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snapshot", "health", "kind", "words"),
    [
        (snap(), HealthStatus.UP, None, "every plane up"),
        (
            snap(planes={"mgmt": True, "storage": False}),
            HealthStatus.DEGRADED,
            FailureKind.LINK_FAULT,
            "not a node failure",
        ),
        (
            snap(planes=NONE),
            HealthStatus.DOWN,
            FailureKind.COMPUTE_NODE_FAILURE,
            "hardware healthy",
        ),
        (
            snap(planes=NONE, bmc=BmcView(True, power_on=False)),
            HealthStatus.DOWN,
            FailureKind.HOST_HW_FAILURE,
            "power off",
        ),
        (
            snap(planes=NONE, bmc=BmcView(True, True, HardwareHealth.CRITICAL, "PSU 1")),
            HealthStatus.DOWN,
            FailureKind.HOST_HW_FAILURE,
            "PSU 1",
        ),
        (
            snap(planes=NONE, bmc=BmcView(True, True, HardwareHealth.WARNING, "fan")),
            HealthStatus.DOWN,
            FailureKind.COMPUTE_NODE_FAILURE,
            "node software",
        ),
        (
            snap(planes=NONE, bmc=BmcView(False)),
            HealthStatus.DOWN,
            FailureKind.HOST_UNREACHABLE,
            "cause unknown",
        ),
        (
            snap(failed_services=("nova-compute",)),
            HealthStatus.DOWN,
            FailureKind.COMPUTE_SERVICE_FAILURE,
            "nova-compute",
        ),
        (snap(planes=NONE, maintenance=True), HealthStatus.MAINTENANCE, None, "maintenance"),
        (
            snap(planes=NONE, fenced=FailureKind.COMPUTE_NODE_FAILURE),
            HealthStatus.FENCED,
            FailureKind.COMPUTE_NODE_FAILURE,
            "fenced",
        ),
        (
            snap(fenced=FailureKind.COMPUTE_NODE_FAILURE),
            HealthStatus.UP,
            None,
            "every plane up",
        ),
        (snap(planes={}), HealthStatus.UNKNOWN, None, "no network plane"),
    ],
)
def test_rows(
    snapshot: HostSnapshot, health: HealthStatus, kind: FailureKind | None, words: str
) -> None:
    result = classify(snapshot)
    assert result.health is health
    assert result.kind is kind
    assert words in result.reason


def test_one_plane_lost_is_never_a_node_failure() -> None:
    for planes in ({"a": False, "b": True}, {"a": True, "b": False, "c": True}):
        result = classify(snap(planes=planes))
        assert result.kind is FailureKind.LINK_FAULT
        assert result.health is HealthStatus.DEGRADED


def test_several_hosts_of_a_rack_unreachable_point_at_the_rack() -> None:
    down = BmcView(False)
    hosts = [
        snap("cmp-1", "r1", planes=NONE, bmc=down),
        snap("cmp-2", "r1", planes=NONE, bmc=down),
        snap("cmp-3", "r2", planes=NONE, bmc=down),
        snap("cmp-4", "r2"),
    ]
    result = classify_all(hosts)
    assert result["cmp-1"].kind is FailureKind.RACK_FAILURE
    assert result["cmp-2"].kind is FailureKind.RACK_FAILURE
    assert "rack r1" in result["cmp-1"].reason
    assert result["cmp-3"].kind is FailureKind.HOST_UNREACHABLE  # alone in its rack
    assert result["cmp-4"].health is HealthStatus.UP


def test_every_outcome_has_its_own_alarm() -> None:
    specs = list(FAILURE_ALARMS.values())
    assert len({(s.fault_type, s.probable_cause) for s in specs}) == len(FailureKind)
    assert FAILURE_ALARMS[FailureKind.LINK_FAULT].severity is Severity.MAJOR
    assert all(
        s.severity is Severity.CRITICAL
        for k, s in FAILURE_ALARMS.items()
        if k is not FailureKind.LINK_FAULT
    )
