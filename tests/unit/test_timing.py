"""Timing invariants across the stack, explained."""

from __future__ import annotations

from pathlib import Path

from vimha.checkconfig import check_files
from vimha.domain.timing import FrontendTiming, LeaseTiming, Level, Stack, check

GOOD = Stack(
    0.1,
    3,
    1.0,
    (LeaseTiming("kv", 3.0, 0.25, 2.0, 0.1),),
    (FrontendTiming("lb: kv", 0.2, 2, 0.2),),
)


def test_the_defaults_hold() -> None:
    assert check(GOOD) == []


def test_each_violation_is_explained() -> None:
    slow_detection = Stack(1.0, 3, 1.0, (LeaseTiming("kv", 3.0, 0.25, 2.0),))
    (f,) = check(slow_detection)
    assert f.level is Level.ERROR and "before the controllers even notice" in f.message
    bad_lease = Stack(0.1, 3, 1.0, (LeaseTiming("kv", 2.0, 0.5, 2.5),))
    assert any("step down" in f.message for f in check(bad_lease))
    slow_monitor = Stack(0.1, 3, 1.0, (LeaseTiming("kv", 3.0, 0.25, 2.0, 0.5),))
    assert any("budget" in f.message for f in check(slow_monitor))
    lazy_lb = Stack(0.1, 3, 1.0, (), (FrontendTiming("lb", 1.0, 3, 2.0),))
    levels = {f.level for f in check(lazy_lb)}
    assert levels == {Level.WARNING, Level.ERROR}  # slow checks; clients give up first


def test_etcd_raises_short_ttls() -> None:
    stack = Stack(0.1, 3, 1.0, (LeaseTiming("kv", 1.0, 0.2, 0.8),), etcd_election_timeout=1.0)
    (f,) = check(stack)
    assert f.level is Level.WARNING and "etcd raises it" in f.message


def test_files_are_read(tmp_path: Path) -> None:
    assert check_files(None, []) == []
