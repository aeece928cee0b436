"""HA metrics (issue 20, VNF-4): outages with their causes from the state journal, health
checks and host events; availability over windows, nines, failures, MTBF, MTTR."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.support.traces import Trace, at, cleared, host_failure, instance_failure
from vimha.config import load_rules
from vimha.domain import metrics as m
from vimha.domain.alarms import Alarm
from vimha.domain.incidents import StateSeen

RULES = load_rules(None, ("site", "zone", "rack", "host"))
HOUR = timedelta(hours=1)


def row(
    t: float, status: str, host: str = "cmp-1", power: str = "running", n: int = 1
) -> StateSeen:
    return StateSeen(0, "i-1", at(t), status, host, n, "vm-1", "vnf-1", "fw", "LEVEL_1", power)


def record(rows: list[StateSeen], t: Trace | None = None, now: float = 3600) -> m.Record:
    alarms = list(t.alarms.values()) if t else []
    by_id = {a.id: a for a in alarms}
    mine = [a for a in alarms if a.resource_id == "i-1"]
    hosts: dict[str, list[Alarm]] = {}
    for a in alarms:
        if a.vim_level_resource_type == "host":
            hosts.setdefault(a.managed_object_id, []).append(a)
    return m.instance_record(rows, mine, hosts, by_id, at(now))


def fig(r: m.Record, span: timedelta = HOUR, now: float = 3600) -> m.Figures:
    return m.figures(r, "w", span, at(now))


def test_a_crash_is_an_outage_of_its_known_length_with_its_cause() -> None:
    t = Trace(RULES)
    t.event(instance_failure("cmp-1", "i-1", 1000.01))
    t.event(cleared(instance_failure("cmp-1", "i-1", 1000.01), 1003.2), 1003.2)
    r = record(
        [row(0, "BUILDING"), row(10, "ACTIVE"), row(1000, "ERROR"), row(1003.2, "ACTIVE")], t
    )
    (outage,) = r.outages
    assert outage.seconds(at(3600)) == pytest.approx(3.2)
    assert outage.cause == "INSTANCE_CRASHED on vnf-1" and outage.source == "state"
    f = fig(r)
    assert f.observed == pytest.approx(3590)  # in service from its first ACTIVE
    assert f.outage == pytest.approx(3.2) and f.failures == 1
    assert f.availability == pytest.approx(1 - 3.2 / 3590)
    assert f.mttr == pytest.approx(3.2) and f.mtbf == pytest.approx(3590 - 3.2)
    assert f.to_dict()["nines"] == pytest.approx(3.049, abs=1e-3)


def test_a_host_failure_is_an_outage_even_while_the_instance_still_says_active() -> None:
    t = Trace(RULES)
    host = host_failure("cmp-1", 2000)
    t.event(host)
    unknown = t.event(instance_failure("cmp-1", "i-1", 2000.3, "INSTANCE_STATE_UNKNOWN"))
    assert unknown
    t.settle(2001)
    t.event(cleared(host, 2010), 2010)
    r = record(
        [
            row(0, "ACTIVE"),
            row(2005, "REBUILDING", "cmp-2", n=2),
            row(2006, "ACTIVE", "cmp-2", n=2),
        ],
        t,
    )
    (outage,) = r.outages
    assert (outage.start, outage.end) == (at(2000), at(2006))  # from the host's failure
    assert outage.cause == "HOST_HW_FAILURE on cmp-1" and outage.source == "host"
    assert fig(r).failures == 1


def test_a_health_check_says_it_hangs_and_the_cause_is_tied_to_its_root() -> None:
    t = Trace(RULES)
    t.event(host_failure("cmp-1", 500, "COMPUTE_SERVICE_FAILURE"))
    hung = instance_failure("cmp-1", "i-1", 500.5, "INSTANCE_HUNG")
    t.event(hung)
    t.settle(501)
    t.event(cleared(hung, 530), 530)
    r = record([row(0, "ACTIVE")], t)
    causes = [(o.source, o.cause) for o in r.outages]
    assert causes == [("host", "COMPUTE_SERVICE_FAILURE on cmp-1")]  # the host's alarm first
    t2 = Trace(RULES)
    t2.event(hung)
    t2.event(cleared(hung, 530), 530)
    (only,) = record([row(0, "ACTIVE")], t2).outages
    assert only.source == "health-check" and only.seconds(at(3600)) == pytest.approx(29.5)


def test_planned_stops_are_neither_outage_nor_service_time() -> None:
    r = record(
        [
            row(0, "ACTIVE"),
            row(100, "SHUTOFF", power="stopped"),
            row(400, "ACTIVE"),
            row(500, "DELETED", power="deleted"),
        ]
    )
    f = fig(r)
    assert r.outages == () and f.observed == pytest.approx(200) and f.availability == 1.0
    assert f.nines is None and f.failures == 0 and f.mtbf is None and f.mttr is None


def test_a_watchdog_reset_in_place_is_a_failure_without_an_outage() -> None:
    t = Trace(RULES)
    t.event(instance_failure("cmp-1", "i-1", 100, "INSTANCE_WATCHDOG_EXPIRED"))
    f = fig(record([row(0, "ACTIVE")], t))
    assert f.failures == 1 and f.outage == 0 and f.mtbf == pytest.approx(3600)


def test_windows_see_only_their_outages_and_an_ongoing_one_counts_until_now() -> None:
    rows = [
        row(-7200, "ACTIVE"),
        row(-7000, "ERROR"),
        row(-6990, "ACTIVE"),  # 10 s, two hours ago
        row(3590, "ERROR"),  # ongoing: 10 s so far
    ]
    r = record(rows)
    hour, day = fig(r), fig(r, timedelta(days=1))
    assert hour.outage == pytest.approx(10) and hour.failures == 1 and hour.mttr is None
    assert day.outage == pytest.approx(20) and day.failures == 2 and day.mttr == pytest.approx(10)
    assert r.outages[-1].end is None


def test_a_vnf_service_is_out_only_while_no_instance_of_a_vdu_is_up() -> None:
    now = at(3600)

    def inst(out: list[tuple[float, float]]) -> m.Record:
        return m.Record(
            (m.Span(at(0), None),),
            tuple(m.Outage(at(a), at(b), "x", "state") for a, b in out),
        )

    a = inst([(100, 110), (1000, 1001)])
    b = inst([(105, 120)])
    other_vdu = inst([(2000, 2002)])
    service = m.service_record({"fw": [a, b], "lb": [other_vdu]}, now)
    assert [(o.start, o.end) for o in service.outages] == [
        (at(105), at(110)),
        (at(2000), at(2002)),
    ]
    f = m.figures(service, "1h", HOUR, now)
    assert f.outage == pytest.approx(7) and f.failures == 2
    pop = m.population_figures([a, b, other_vdu], "1h", HOUR, now)
    assert pop.observed == pytest.approx(3 * 3600) and pop.outage == pytest.approx(28)
    assert pop.failures == 4 and pop.mttr == pytest.approx(7)


def test_nines() -> None:
    f = m.Figures("w", at(0), at(1000), 1000.0, 1.0, 1, 1.0, 999.0)
    assert f.availability == pytest.approx(0.999) and f.nines == pytest.approx(3.0)
    assert m.Figures("w", at(0), at(0), 0.0, 0.0, 0, None, None).availability is None


def test_host_outages_come_from_its_failure_alarms() -> None:
    t = Trace(RULES)
    t.event(host_failure("cmp-2", 100, "HOST_UNREACHABLE"))
    t.event(cleared(host_failure("cmp-2", 100, "HOST_UNREACHABLE"), 160), 160)
    alarms = list(t.alarms.values())
    r = m.host_record(alarms, at(-86400), {a.id: a for a in alarms}, at(3600))
    f = fig(r)
    assert f.outage == pytest.approx(60) and f.failures == 1 and f.observed == pytest.approx(3600)


def test_span_arithmetic_with_spans_still_going_on() -> None:
    now = at(100)
    a = [m.Span(at(0), None)]
    b = [m.Span(at(10), at(20)), m.Span(at(15), at(30)), m.Span(at(50), None)]
    assert m.difference(a, b, now) == [m.Span(at(0), at(10)), m.Span(at(30), at(50))]
    assert m.difference(b, a, now) == []
    assert m.union(b, now) == [m.Span(at(10), at(30)), m.Span(at(50), None)]
    assert m.intersect(a, b, now) == [m.Span(at(10), at(30)), m.Span(at(50), None)]
    assert m.total(m.union(b, now), at(0), now) == 20 + 50
    served = m.Record((m.Span(at(0), None),), (m.Outage(at(90), None, "X", "state"),))
    (ongoing,) = m.service_record({"only": [served]}, now).outages
    assert (ongoing.start, ongoing.end, ongoing.cause) == (at(90), None, "X")
