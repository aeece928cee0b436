"""decide_hardware(): component health from the BMC -> ENVIRONMENTAL/EQUIPMENT alarms (FAULT-1)."""

from __future__ import annotations

from datetime import UTC, datetime

from vimha.domain.alarms import EventType, Location, Severity
from vimha.domain.classification import HardwareHealth
from vimha.domain.hardware import (
    Component,
    LogEntry,
    LogWatch,
    decide_bmc_log,
    decide_hardware,
    system_component,
)

NOW = datetime(2026, 11, 25, tzinfo=UTC)
LOC = Location((("site", "s1"), ("rack", "r1"), ("host", "cmp-1")))
OK, WARN, CRIT = HardwareHealth.OK, HardwareHealth.WARNING, HardwareHealth.CRITICAL


def comps(temp: HardwareHealth = OK, psu: HardwareHealth = OK) -> list[Component]:
    return [
        Component("temperature", "CPU1 Temp", temp, 45.0 if temp is OK else 95.0),
        Component("fan", "Fan1", OK, 5000),
        Component("psu", "PSU1", psu),
    ]


def test_healthy_components_raise_nothing() -> None:
    events, state = decide_hardware("cmp-1", {}, comps(), LOC, NOW)
    assert events == [] and state == {}


def test_failed_psu_is_an_equipment_alarm_located_at_the_component() -> None:
    events, state = decide_hardware("cmp-1", {}, comps(psu=CRIT), LOC, NOW)
    (e,) = events
    assert e.managed_object_id == "cmp-1/PSU1"
    assert e.fault_type == "POWER_SUPPLY_FAILURE"
    assert e.event_type is EventType.EQUIPMENT_ALARM
    assert e.perceived_severity is Severity.CRITICAL
    assert e.location.path == "s1/r1/cmp-1/PSU1"
    assert dict(e.location.levels)["component"] == "PSU1"
    assert "CRITICAL" in e.fault_details[0]
    assert state == {"psu:PSU1": CRIT}
    # Same reading again: nothing new.
    again, state2 = decide_hardware("cmp-1", state, comps(psu=CRIT), LOC, NOW)
    assert again == [] and state2 == state


def test_temperature_warning_then_critical_then_normal() -> None:
    events, state = decide_hardware("cmp-1", {}, comps(temp=WARN), LOC, NOW)
    assert [e.perceived_severity for e in events] == [Severity.MINOR]
    assert events[0].event_type is EventType.ENVIRONMENTAL_ALARM
    assert events[0].fault_type == "TEMPERATURE_ABNORMAL"
    assert "reading 95" in events[0].fault_details[0]
    events, state = decide_hardware("cmp-1", state, comps(temp=CRIT), LOC, NOW)
    assert [e.perceived_severity for e in events] == [Severity.CRITICAL]
    events, state = decide_hardware("cmp-1", state, comps(), LOC, NOW)
    assert [e.perceived_severity for e in events] == [Severity.CLEARED]
    assert events[0].managed_object_id == "cmp-1/CPU1 Temp" and state == {}


def test_a_component_gone_from_the_reading_is_cleared() -> None:
    _, state = decide_hardware("cmp-1", {}, comps(psu=CRIT), LOC, NOW)
    events, state = decide_hardware("cmp-1", state, comps()[:2], LOC, NOW)
    assert [(e.managed_object_id, e.perceived_severity) for e in events] == [
        ("cmp-1/PSU1", Severity.CLEARED)
    ]
    assert events[0].fault_type == "POWER_SUPPLY_FAILURE"  # the same alarm's key


def test_system_rollup_only_when_no_component_explains_it() -> None:
    assert system_component(OK, comps()) is None
    assert system_component(None, comps()) is None
    assert system_component(CRIT, comps(psu=CRIT)) is None
    rollup = system_component(WARN, comps())
    assert rollup is not None and rollup.kind == "system" and rollup.health is WARN
    events, _ = decide_hardware("cmp-1", {}, [rollup], LOC, NOW)
    assert events[0].fault_type == "HARDWARE_HEALTH"


def test_a_lost_bond_member_is_a_major_communications_alarm() -> None:
    member = Component("link", "bond0/eth1", CRIT, None, "bonding")
    events, _ = decide_hardware("cmp-1", {}, [member], LOC, NOW)
    (e,) = events
    assert e.fault_type == "BOND_MEMBER_DOWN"
    assert e.event_type is EventType.COMMUNICATIONS_ALARM
    assert e.perceived_severity is Severity.MAJOR  # the plane still works
    assert e.managed_object_id == "cmp-1/bond0/eth1"


# -- the BMC's event log --------------------------------------------------------------------
def entry(n: int, health: HardwareHealth | None, message: str = "m") -> LogEntry:
    return LogEntry(n, f"2026-11-25T00:00:{n:02d}Z", health, message)


def test_the_first_reading_of_the_log_is_only_a_baseline() -> None:
    events, watch = decide_bmc_log("cmp-1", LogWatch(), [entry(1, CRIT)], CRIT, LOC, NOW)
    assert events == [] and watch == LogWatch(1, None)


def test_new_critical_entries_raise_and_a_healthy_system_clears() -> None:
    watch = LogWatch(1, None)
    entries = [entry(1, CRIT), entry(2, OK, "power on"), entry(3, WARN, "fan slow")]
    events, watch = decide_bmc_log("cmp-1", watch, entries, WARN, LOC, NOW)
    (e,) = events
    assert e.managed_object_id == "cmp-1/SEL" and e.fault_type == "BMC_LOG_EVENT"
    assert e.perceived_severity is Severity.MINOR and "fan slow" in e.fault_details[0]
    assert e.location.path == "s1/r1/cmp-1/SEL"
    entries.append(entry(4, CRIT, "PSU1 failed"))
    events, watch = decide_bmc_log("cmp-1", watch, entries, CRIT, LOC, NOW)
    assert [x.perceived_severity for x in events] == [Severity.CRITICAL]
    events, watch = decide_bmc_log("cmp-1", watch, entries, CRIT, LOC, NOW)
    assert events == []  # nothing new, still unhealthy
    entries.append(entry(5, WARN, "fan slow again"))
    events, watch = decide_bmc_log("cmp-1", watch, entries, CRIT, LOC, NOW)
    assert [x.perceived_severity for x in events] == [Severity.CRITICAL]  # never lowered
    events, watch = decide_bmc_log("cmp-1", watch, entries, OK, LOC, NOW)
    assert [x.perceived_severity for x in events] == [Severity.CLEARED]
    assert watch == LogWatch(5, None)


def test_a_cleared_log_numbers_anew() -> None:
    events, watch = decide_bmc_log("cmp-1", LogWatch(40), [entry(1, CRIT, "x")], CRIT, LOC, NOW)
    assert [x.perceived_severity for x in events] == [Severity.CRITICAL] and watch.last_id == 1
