"""Correlation rules (issue 20, VNF-6): fault traces with known root causes replayed through
the pure decisions; the shipped rules; rules refused with the reason."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.support.traces import (
    Trace,
    at,
    cleared,
    component_failure,
    host_failure,
    instance_failure,
    link_down,
)
from vimha.config import load_rules
from vimha.domain.alarms import ChangeKind, apply_event
from vimha.domain.correlation import Link, RaiseSuspect
from vimha.domain.correlation_rules import parse_rules
from vimha.domain.errors import InvalidInput

HIERARCHY = ("site", "zone", "rack", "host")
WITH_POWER = ("site", "zone", "power", "rack", "host")


def shipped(hierarchy: tuple[str, ...] = HIERARCHY) -> Trace:
    return Trace(load_rules(None, hierarchy))


# -- forward: a known root cause ------------------------------------------------------------
def test_a_host_failure_is_the_root_cause_of_what_ran_on_it() -> None:
    t = shipped()
    early = t.event(instance_failure("cmp-1", "i-0", 0))  # a minute before: not its doing
    i1 = t.event(instance_failure("cmp-1", "i-1", 59.8, "INSTANCE_STATE_UNKNOWN"))
    host = t.event(host_failure("cmp-1", 60))
    i2 = t.event(instance_failure("cmp-1", "i-2", 60.4, "INSTANCE_STATE_UNKNOWN"))
    other = t.event(instance_failure("cmp-2", "i-3", 60.5))
    link = t.event(link_down("cmp-1", "storage", 60.1))
    assert early and i1 and host and i2 and other and link
    t.settle(61)
    root = t.alarms[host.id]
    assert root.is_root_cause
    assert set(root.correlated_alarm_ids) == {i1.id, i2.id, link.id}
    for dep in (i1, i2, link):
        got = t.alarms[dep.id]
        assert not got.is_root_cause and got.correlated_alarm_ids == (host.id,)
    for untouched in (early, other):
        assert t.alarms[untouched.id].is_root_cause
        assert t.alarms[untouched.id].correlated_alarm_ids == ()
    reasons = [a.reason for a in t.actions if isinstance(a, Link) and a.alarm_id == i1.id]
    assert reasons == [
        "INSTANCE_STATE_UNKNOWN on vnf-1 caused by HOST_HW_FAILURE on cmp-1 (rule host-failure)"
    ]


def test_passes_are_idempotent_and_later_dependents_join() -> None:
    t = shipped()
    host = t.event(host_failure("cmp-3", 0, "HOST_UNREACHABLE"))
    a = t.event(instance_failure("cmp-3", "i-1", 0.5, "INSTANCE_STATE_UNKNOWN"))
    t.settle(1)
    assert t.correlate(2) == []
    b = t.event(instance_failure("cmp-3", "i-2", 3, "INSTANCE_STATE_UNKNOWN"))
    assert host and a and b
    t.settle(4)
    assert t.alarms[host.id].correlated_alarm_ids == (a.id, b.id)
    # a dependent raised after the root cleared is not its doing
    t.event(cleared(host_failure("cmp-3", 0, "HOST_UNREACHABLE"), 10), 10)
    c = t.event(instance_failure("cmp-3", "i-3", 11))
    assert c
    t.settle(12)
    assert t.alarms[c.id].is_root_cause


def test_a_source_repeating_its_fault_does_not_undo_the_correlation() -> None:
    t = shipped()
    host = t.event(host_failure("cmp-1", 0))
    ev = instance_failure("cmp-1", "i-1", 0.2, "INSTANCE_STATE_UNKNOWN")
    dep = t.event(ev)
    assert host and dep
    t.settle(1)
    tied = t.alarms[dep.id]
    again = apply_event(tied, replace(ev, event_time=at(2)), at(2), "x", "vim")
    assert again is not None and again.kind is ChangeKind.REPEATED
    assert not again.alarm.is_root_cause and again.alarm.correlated_alarm_ids == (host.id,)
    worse = apply_event(tied, replace(ev, fault_details=("worse",)), at(3), "x", "vim")
    assert worse is not None and worse.kind is ChangeKind.UPDATED
    assert worse.alarm.correlated_alarm_ids == (host.id,)
    told = apply_event(tied, replace(ev, correlated_alarm_ids=("ext",)), at(4), "x", "vim")
    assert told is not None and told.alarm.correlated_alarm_ids == ("ext",)  # it said so


# -- backward: a root cause nobody reported -------------------------------------------------
def test_instances_failing_on_one_host_reveal_a_latent_hardware_fault() -> None:
    t = shipped()
    crashes = [
        t.event(instance_failure("cmp-2", "i-1", 0)),
        t.event(instance_failure("cmp-2", "i-2", 120, "INSTANCE_WATCHDOG_EXPIRED")),
    ]
    assert t.correlate(130) == []  # two are not enough
    crashes.append(t.event(instance_failure("cmp-2", "i-3", 300)))
    t.event(instance_failure("cmp-3", "i-9", 301))  # elsewhere: not evidence
    t.settle(301)
    suspect = t.one("SUSPECTED_LATENT_HW_FAULT")
    assert suspect.managed_object_id == "cmp-2" and suspect.is_root_cause
    assert suspect.location.path == "s1/z1/r1/cmp-2"
    ids = [c.id for c in crashes if c]
    assert set(suspect.correlated_alarm_ids) == set(ids)
    for i in ids:
        assert not t.alarms[i].is_root_cause and t.alarms[i].correlated_alarm_ids == (suspect.id,)
    raised = [a for a in t.actions if isinstance(a, RaiseSuspect)]
    assert raised[0].reason == (
        "3 INSTANCE_CRASHED/INSTANCE_WATCHDOG_EXPIRED of 3 instance(s) in host cmp-2 within "
        "10m, no alarm on cmp-2: suspected latent hardware fault (instances sharing it keep "
        "failing) (rule latent-hardware)"
    )
    # a fourth failure joins it; no second suspicion
    fourth = t.event(instance_failure("cmp-2", "i-1", 400))
    assert fourth
    t.settle(401)
    assert len(t.of_type("SUSPECTED_LATENT_HW_FAULT")) == 1
    assert t.alarms[fourth.id].correlated_alarm_ids == (suspect.id,)


@pytest.mark.parametrize(
    ("story", "why"),
    [
        ("spread", "failures on different hosts"),
        ("slow", "outside the 10m window"),
        ("one-instance", "one instance failing thrice is its own problem"),
        ("explained", "a known alarm on the host"),
        ("host-failed", "failures tied to a host failure"),
    ],
)
def test_no_suspicion_when_the_failures_are_explained_or_not_shared(story: str, why: str) -> None:
    t = shipped()
    hosts = {"spread": ["cmp-1", "cmp-2", "cmp-3"]}.get(story, ["cmp-1"] * 3)
    times = [0, 400, 800] if story == "slow" else [0, 10, 20]
    ids = ["i-1"] * 3 if story == "one-instance" else ["i-1", "i-2", "i-3"]
    if story == "explained":
        t.event(component_failure("cmp-1", "PSU1", -5))
    if story == "host-failed":
        t.event(host_failure("cmp-1", -1))
    for host, when, iid in zip(hosts, times, ids, strict=True):
        t.event(instance_failure(host, iid, when))
        if story == "one-instance":
            t.event(cleared(instance_failure(host, iid, when), when + 1), when + 1)
        t.correlate(when + 2)
    t.settle(900 if story == "slow" else 30)
    assert t.of_type("SUSPECTED_LATENT_HW_FAULT") == [], why


def test_a_suspicion_clears_without_new_evidence_and_old_evidence_does_not_raise_it_again() -> None:
    t = shipped()
    for n in range(3):
        t.event(instance_failure("cmp-4", f"i-{n}", n))
    t.settle(5)
    first = t.one("SUSPECTED_LATENT_HW_FAULT")
    t.settle(5 + 3599)
    assert t.alarms[first.id].active
    t.settle(5 + 3600)  # an hour without new evidence since it was raised
    assert not t.alarms[first.id].active
    t.settle(5 + 3700)
    assert len(t.of_type("SUSPECTED_LATENT_HW_FAULT")) == 1
    # an operator clears it (a CLEARED event); the same evidence does not raise it again
    t2 = shipped()
    for n in range(3):
        t2.event(instance_failure("cmp-4", f"i-{n}", n))
    t2.settle(5)
    suspect = t2.one("SUSPECTED_LATENT_HW_FAULT")
    ev = replace(
        host_failure("cmp-4", 10),
        fault_type=suspect.fault_type,
        probable_cause=suspect.probable_cause,
    )
    t2.event(cleared(ev, 10), 10)
    t2.settle(11)
    assert [a.active for a in t2.of_type("SUSPECTED_LATENT_HW_FAULT")] == [False]
    for n in range(3):
        t2.event(instance_failure("cmp-4", f"i-{n + 5}", 20 + n))
    t2.settle(30)
    assert [a.active for a in t2.of_type("SUSPECTED_LATENT_HW_FAULT")] == [False, True]


def test_link_faults_across_a_rack_suspect_its_top_of_rack_switch() -> None:
    t = shipped()
    links = [
        t.event(link_down("cmp-1", "storage", 0)),
        t.event(link_down("cmp-2", "storage", 20)),
    ]
    t.event(cleared(link_down("cmp-1", "storage", 0), 30), 30)
    links.append(t.event(link_down("cmp-1", "storage", 60)))
    t.event(link_down("cmp-3", "mgmt", 61))  # the other rack
    t.settle(62)
    tor = t.one("SUSPECTED_TOR_SWITCH_FAULT")
    assert tor.managed_object_id == "s1/z1/r1" and tor.vim_level_resource_type == "rack"
    assert tor.faulty_resource_type.value == "NETWORK"
    assert set(tor.correlated_alarm_ids) == {a.id for a in links if a}
    # links of one host alone are a host's problem, not the switch's
    t2 = shipped()
    for n in range(3):
        t2.event(link_down("cmp-3", "storage", 10 * n))
        t2.event(cleared(link_down("cmp-3", "storage", 10 * n), 10 * n + 5), 10 * n + 5)
    t2.settle(40)
    assert t2.of_type("SUSPECTED_TOR_SWITCH_FAULT") == []


def test_a_host_whose_instances_keep_failing_after_recoveries_is_proposed_for_maintenance() -> None:
    t = shipped()
    for n in range(5):
        ev = instance_failure("cmp-1", "i-1" if n % 2 else "i-2", 600 * n)
        t.event(ev)
        if n < 4:
            t.event(cleared(ev, 600 * n + 30), 600 * n + 30)  # recovered
        t.correlate(600 * n + 31)
    t.settle(2500)
    proposal = t.one("HOST_MAINTENANCE_PROPOSED")
    assert proposal.managed_object_id == "cmp-1"
    assert proposal.perceived_severity.value == "WARNING"
    assert len(proposal.correlated_alarm_ids) == 5
    assert "4 after recoveries" in proposal.fault_details[0]


def test_a_power_domain_failure_explains_its_hosts_and_their_instances() -> None:
    t = shipped(WITH_POWER)
    h1 = t.event(host_failure("cmp-1", 0, "HOST_UNREACHABLE", power=True))
    h3 = t.event(host_failure("cmp-3", 0.4, "HOST_UNREACHABLE", power=True))
    h2 = t.event(host_failure("cmp-2", 0.5, "HOST_UNREACHABLE", power=True))  # other domain
    i1 = t.event(instance_failure("cmp-1", "i-1", 1, "INSTANCE_STATE_UNKNOWN", power=True))
    assert h1 and h2 and h3 and i1
    t.settle(2)
    pd = t.one("POWER_DOMAIN_FAILURE")
    assert pd.managed_object_id == "s1/z1/pd-a" and pd.is_root_cause
    assert set(pd.correlated_alarm_ids) == {h1.id, h3.id}
    assert not t.alarms[h1.id].is_root_cause and pd.id in t.alarms[h1.id].correlated_alarm_ids
    assert t.alarms[h2.id].is_root_cause
    assert t.alarms[i1.id].correlated_alarm_ids == (h1.id,)  # its host, the deeper element
    assert set(t.alarms[h1.id].correlated_alarm_ids) == {pd.id, i1.id}


# -- the rules themselves -------------------------------------------------------------------
def test_the_shipped_rules_skip_the_power_rules_without_a_power_level() -> None:
    rules = load_rules(None, HIERARCHY)
    assert [r.name for r in rules.forward] == ["host-failure"]
    assert [r.name for r in rules.backward] == [
        "latent-hardware",
        "latent-hardware-rack",
        "top-of-rack-switch",
        "maintenance",
    ]
    assert set(rules.skipped) == {"power-domain-failure", "power-domain"}
    with_power = load_rules(None, WITH_POWER)
    assert with_power.skipped == ()
    assert "POWER_DOMAIN_FAILURE" in with_power.derived_types
    assert rules.to_dict()["backward"][0]["window"] == "10m"


def rule(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "r",
        "evidence": ["INSTANCE_CRASHED"],
        "level": "host",
        "count": 3,
        "window": "10m",
        "raise": {"fault_type": "SUSPECT", "probable_cause": "why"},
    }
    return {**base, **over}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], "rules: a mapping"),
        ({"sideways": []}, "unknown key(s) ['sideways']"),
        ({"forward": [{"name": "f", "roots": ["X"], "level": "shelf"}]}, "forward[0].level"),
        ({"forward": [{"name": "f", "roots": [], "level": "host"}]}, "forward[0].roots"),
        ({"forward": [{"name": "f", "roots": "X", "level": "host", "x": 1}]}, "unknown key"),
        ({"backward": [rule(count=0)]}, "backward[0].count: an integer >= 1"),
        ({"backward": [rule(window="soon")]}, "backward[0].window: duration 'soon'"),
        ({"backward": [rule(distinct="rack")]}, "backward[0].distinct: 'rack' is not a level"),
        ({"backward": [rule(min_distinct=2)]}, "min_distinct: needs `distinct`"),
        ({"backward": [rule(min_recovered=4)]}, "min_recovered: cannot exceed count"),
        ({"backward": [rule(raise_={})]}, "unknown key(s) ['raise_']"),
        (
            {
                "backward": [
                    rule(
                        **{
                            "raise": {
                                "fault_type": "S",
                                "probable_cause": "p",
                                "severity": "CLEARED",
                            }
                        }
                    )
                ]
            },
            "cannot raise CLEARED",
        ),
        (
            {
                "backward": [
                    rule(**{"raise": {"fault_type": "INSTANCE_CRASHED", "probable_cause": "p"}})
                ]
            },
            "must not be one of its evidence",
        ),
        ({"backward": [rule(), rule(name="r2")]}, "each rule must raise its own fault_type"),
        ({"backward": [rule(), rule()]}, "'r' is used by another rule"),
    ],
)
def test_bad_rules_are_refused_with_the_field(doc: object, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        parse_rules(doc, HIERARCHY)
    assert message in exc.value.detail


def test_a_rules_file_is_checked_when_the_config_loads(tmp_path: Any) -> None:
    from vimha.config import load

    bad = tmp_path / "rules.yaml"
    bad.write_text("backward:\n  - name: x\n    level: rack\n")
    with pytest.raises(InvalidInput) as exc:
        load(None, {"auth": {"token_file": "t"}, "correlation": {"rules_file": str(bad)}})
    assert "correlation.rules_file" in exc.value.detail and "backward[0]" in exc.value.detail
    good = tmp_path / "good.yaml"
    good.write_text("forward: []\n")
    cfg = load(None, {"auth": {"token_file": "t"}, "correlation": {"rules_file": str(good)}})
    assert cfg.correlation.rules_file == str(good)
