"""Incidents (issue 20): failures replayed through `advance` with what the loop would
observe (alarm history, the state journal, fencing, recovery's reports): one timeline per
failure, every stage with its time, budgets against targets."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from tests.support.traces import Trace, at, cleared, host_failure, instance_failure
from vimha.config import load_rules
from vimha.domain.alarms import Alarm
from vimha.domain.incident_steps import advance
from vimha.domain.incidents import (
    Affected,
    AlarmSeen,
    Change,
    FenceSeen,
    Incident,
    Kind,
    Observations,
    Policy,
    Report,
    Stage,
    State,
    StateSeen,
    budgets,
    view,
)

RULES = load_rules(None, ("site", "zone", "rack", "host"))
POLICY = Policy(element_faults=RULES.derived_types)


def ids() -> Iterator[str]:
    n = 0
    while True:
        n += 1
        yield f"inc-{n}"


def seen(alarm: Alarm, kind: str, t: float, seq: int = 0) -> AlarmSeen:
    return AlarmSeen(seq, kind, at(t), alarm)


def row(iid: str, t: float, status: str, host: str, incarnation: int = 1) -> StateSeen:
    return StateSeen(0, iid, at(t), status, host, incarnation, name=f"vm-{iid}")


class Book:
    """Incidents as the store would keep them across steps."""

    def __init__(self, policy: Policy = POLICY) -> None:
        self.policy = policy
        self.incidents: dict[str, Incident] = {}
        self.ids = ids()
        self.changes: list[Change] = []

    def step(self, obs: Observations) -> list[Change]:
        changes = advance(list(self.incidents.values()), obs, self.policy, self.ids)
        for c in changes:
            self.incidents[c.incident.id] = replace(c.incident, version=c.incident.version + 1)
        self.changes += changes
        return changes

    def live(self) -> list[Incident]:
        return [i for i in self.incidents.values() if i.state is not State.MERGED]


def stages(inc: Incident) -> list[tuple[str, str, float]]:
    return [
        (e.stage.value, e.object, round((e.at - at(0)).total_seconds(), 3))
        for e in inc.entries
        if e.stage is not Stage.ALARM
    ]


def spans(inc: Incident, targets: dict[str, float] | None = None) -> dict[str, float | None]:
    return {b.span: b.seconds for b in budgets(inc, targets or {})}


def test_a_host_failure_is_one_incident_with_every_stage() -> None:
    t = Trace(RULES)
    host = t.event(host_failure("cmp-3", 0, "HOST_UNREACHABLE"))
    unknown = t.event(instance_failure("cmp-3", "i-1", 0.2, "INSTANCE_STATE_UNKNOWN"))
    assert host and unknown
    t.settle(0.5)
    residents = {"cmp-3": [Affected("i-1", "cmp-3", 1, "vm-i-1"), Affected("i-2", "cmp-3", 1)]}
    b = Book()
    b.step(
        Observations(
            alarms=[seen(host, "RAISED", 0, 1), seen(t.alarms[unknown.id], "RAISED", 0.2, 2)],
            residents=residents,
            last_heard={"cmp-3": at(-0.3)},
        )
    )
    (inc,) = b.live()
    assert inc.kind is Kind.HOST and inc.subject == "cmp-3" and inc.state is State.OPEN
    assert inc.title == "HOST_UNREACHABLE on cmp-3"
    assert inc.alarm_ids == (host.id, unknown.id)
    fence = FenceSeen("cmp-3", at(0.1), at(0.9), True, "ForceOff confirmed")
    b.step(
        Observations(
            states=[
                row("i-1", 1.2, "REBUILDING", "cmp-1", 2),
                row("i-2", 1.3, "REBUILDING", "cmp-2", 2),
                row("i-1", 2.0, "ACTIVE", "cmp-1", 2),
                row("i-2", 2.5, "ACTIVE", "cmp-2", 2),
            ],
            reports=[Report(1, "instance", "i-2", Stage.SERVING, at(2.8), "answers on :8080")],
            fences={"cmp-3": [fence]},
        )
    )
    (inc,) = b.live()
    assert stages(inc) == [
        ("failed", "cmp-3", -0.3),
        ("detected", "cmp-3", 0.0),
        ("fenced", "cmp-3", 0.9),
        ("placed", "i-1", 1.2),
        ("placed", "i-2", 1.3),
        ("booted", "i-1", 2.0),
        ("serving", "i-1", 2.0),
        ("booted", "i-2", 2.5),
        ("serving", "i-2", 2.5),
        ("serving", "i-2", 2.8),
    ]
    assert inc.state is State.RECOVERED and inc.recovered_at == at(2.8)  # reported wins
    assert b.changes[-1].recovered
    assert spans(inc) == {
        "detect": 0.3,
        "fence": 0.9,
        "place": 0.4,
        "boot": 1.2,
        "serve": 0.3,
        "total": 3.1,
    }
    over = {x.span: x.over for x in budgets(inc, {"fence": 0.5, "total": 5.0, "place": 1.0})}
    assert over["fence"] and not over["total"] and not over["place"]
    # the host comes back, repaired: its alarm clears, the incident closes
    b.step(Observations(alarms=[seen(host, "CLEARED", 100, 3)]))
    (inc,) = b.live()
    assert inc.state is State.CLOSED and inc.closed_at == at(100)
    doc = view(inc, {"total": 5.0}, "http://vim")
    assert doc["budgets"][-1] == {
        "stage": "total",
        "seconds": 3.1,
        "targetSeconds": 5.0,
        "usedPercent": 62.0,
        "over": False,
    }
    assert doc["timeline"][0]["offsetSeconds"] == 0.0  # from the failure


def test_an_instance_crash_restarted_in_place_opens_and_closes_its_incident() -> None:
    t = Trace(RULES)
    crash = instance_failure("cmp-1", "i-7", 0)
    alarm = t.event(crash)
    assert alarm
    b = Book()
    b.step(
        Observations(
            alarms=[seen(alarm, "RAISED", 0)],
            states=[row("i-7", -0.01, "ERROR", "cmp-1"), row("i-7", 0.8, "ACTIVE", "cmp-1")],
        )
    )
    t.event(cleared(crash, 0.8), 0.8)
    b.step(Observations(alarms=[seen(t.alarms[alarm.id], "CLEARED", 0.8)]))
    (inc,) = b.live()
    assert inc.kind is Kind.INSTANCE and inc.subject == "i-7"
    assert inc.state is State.CLOSED and inc.recovered_at == at(0.8)
    assert stages(inc) == [
        ("detected", "i-7", 0.0),
        ("booted", "i-7", 0.8),
        ("serving", "i-7", 0.8),
    ]
    assert spans(inc)["total"] == 0.8 and spans(inc)["place"] is None


def test_an_instance_incident_whose_alarm_turns_out_caused_by_its_host_is_merged() -> None:
    t = Trace(RULES)
    early = t.event(instance_failure("cmp-2", "i-1", 0))  # crashes first
    assert early
    b = Book()
    b.step(Observations(alarms=[seen(early, "RAISED", 0, 1)]))
    (alone,) = b.live()
    assert alone.kind is Kind.INSTANCE
    host = t.event(host_failure("cmp-2", 0.3))
    assert host
    t.settle(1)
    b.step(
        Observations(
            alarms=[seen(host, "RAISED", 0.3, 2), seen(t.alarms[early.id], "UPDATED", 1, 3)],
            residents={"cmp-2": [Affected("i-1", "cmp-2", 1), Affected("i-2", "cmp-2", 1)]},
        )
    )
    (inc,) = b.live()
    assert inc.kind is Kind.HOST and set(inc.alarm_ids) == {host.id, early.id}
    assert b.incidents[alone.id].state is State.MERGED
    assert b.incidents[alone.id].merged_into == inc.id
    assert [a.instance_id for a in inc.affected] == ["i-1", "i-2"]


def test_a_latent_hardware_suspicion_gathers_the_crashes_that_revealed_it() -> None:
    t = Trace(RULES)
    b = Book()
    crashes = []
    for n in range(3):
        ev = instance_failure("cmp-4", f"i-{n}", 10 * n)
        a = t.event(ev)
        assert a
        crashes.append(a)
        b.step(Observations(alarms=[seen(a, "RAISED", 10 * n)]))
        t.event(cleared(ev, 10 * n + 1), 10 * n + 1)
        b.step(
            Observations(
                alarms=[seen(t.alarms[a.id], "CLEARED", 10 * n + 1)],
                states=[row(f"i-{n}", 10 * n + 1, "ACTIVE", "cmp-4")],
            )
        )
    assert [i.state for i in b.live()] == [State.CLOSED] * 3
    t.settle(25)
    suspect = t.one("SUSPECTED_LATENT_HW_FAULT")
    b.step(
        Observations(
            alarms=[seen(suspect, "RAISED", 25)]
            + [seen(t.alarms[a.id], "UPDATED", 25.1) for a in crashes]
        )
    )
    (inc,) = b.live()
    assert inc.kind is Kind.ELEMENT and inc.subject == "cmp-4"
    assert set(inc.alarm_ids) == {suspect.id, *(a.id for a in crashes)}
    assert {a.instance_id for a in inc.affected} == {"i-0", "i-1", "i-2"}
    assert inc.state is State.OPEN  # a suspicion is open while its alarm is


def test_serving_can_wait_for_recovery_to_report_it() -> None:
    t = Trace(RULES)
    alarm = t.event(instance_failure("cmp-1", "i-1", 0, "INSTANCE_HUNG"))
    assert alarm
    b = Book(replace(POLICY, serving_from="reported"))
    b.step(Observations(alarms=[seen(alarm, "RAISED", 0)]))
    b.step(
        Observations(
            states=[
                row("i-1", 0.5, "REBUILDING", "cmp-1", 1),
                row("i-1", 1.0, "ACTIVE", "cmp-1", 2),
            ]
        )
    )
    (inc,) = b.live()
    assert inc.state is State.OPEN
    b.step(Observations(reports=[Report(1, "instance", "i-1", Stage.SERVING, at(1.4), "HTTP 200")]))
    (inc,) = b.live()
    assert inc.state is State.RECOVERED and spans(inc)["serve"] == 0.4
    assert ("placed", "i-1", 1.0) in stages(inc)  # a new incarnation: placed again


def test_reports_attach_to_the_subject_s_incident_or_open_one_on_detection() -> None:
    b = Book()
    assert b.step(Observations(reports=[Report(1, "host", "cmp-9", Stage.PLACED, at(1))])) == []
    b.step(
        Observations(
            reports=[Report(2, "host", "cmp-9", Stage.DETECTED, at(2), "VNFM reported a fault")],
            residents={"cmp-9": [Affected("i-1", "cmp-9", 1)]},
        )
    )
    (inc,) = b.live()
    assert inc.kind is Kind.HOST and inc.root_alarm_id is None
    b.step(
        Observations(
            reports=[
                Report(3, "host", "cmp-9", Stage.FENCED, at(3), "confirmed down by the operator"),
                Report(4, "host", "cmp-9", Stage.PLACED, at(4), "on cmp-1", "i-1"),
                Report(5, "host", "cmp-9", Stage.BOOTED, at(5), "", "i-1"),
                Report(6, "host", "cmp-9", Stage.SERVING, at(6), "", "i-1"),
            ]
        )
    )
    (inc,) = b.live()
    assert inc.state is State.RECOVERED
    assert spans(inc) == {
        "detect": None,
        "fence": 1.0,
        "place": 1.0,
        "boot": 1.0,
        "serve": 1.0,
        "total": 4.0,
    }


def test_alarms_that_open_no_incident() -> None:
    t = Trace(RULES)
    link = t.event(
        replace(host_failure("cmp-1", 0), fault_type="NETWORK_PLANE_DOWN", managed_object_id="l")
    )
    assert link
    assert Book().step(Observations(alarms=[seen(link, "RAISED", 0)])) == []


def names(incidents: Sequence[Incident]) -> list[str]:
    return [i.title for i in incidents]


def test_spans_are_final_once_known_and_observed_once() -> None:
    t = Trace(RULES)
    host = t.event(host_failure("cmp-1", 0))
    assert host
    b = Book()
    (opened,) = b.step(
        Observations(
            alarms=[seen(host, "RAISED", 0)],
            residents={"cmp-1": [Affected("i-1", "cmp-1", 1)]},
            last_heard={"cmp-1": at(-0.4)},
        )
    )
    assert opened.final == ("detect",)
    fence = FenceSeen("cmp-1", at(0.1), at(0.6), True, "ForceOff")
    (fenced,) = b.step(Observations(fences={"cmp-1": [fence]}))
    assert fenced.final == ("fence",)
    (back,) = b.step(
        Observations(
            states=[
                row("i-1", 1.0, "REBUILDING", "cmp-2", 2),
                row("i-1", 2.0, "ACTIVE", "cmp-2", 2),
            ]
        )
    )
    assert back.recovered and back.final == ("place", "boot", "serve", "total")
