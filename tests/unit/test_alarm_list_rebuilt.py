"""Who announces AlarmListRebuiltNotification: the singleton holder, once per start of the
controllers' cluster (`domain/delivery.py: alarm_list_rebuilt`)."""

from __future__ import annotations

import pytest

from vimha.domain.delivery import alarm_list_rebuilt


@pytest.mark.parametrize(
    ("known", "live", "announce", "why"),
    [
        (None, {"a1"}, True, "no start"),  # first start ever (or the backend's data is new)
        (None, {"a1", "b1", "c1"}, True, "no start"),
        ({"a1", "b1"}, {"b1", "c2"}, False, "b1"),  # the holder changed: b1 ran all along
        ({"a1", "b1"}, {"a1", "b1", "c1"}, False, "a1"),  # c1 joined the running cluster
        ({"a1", "b1"}, {"a2", "b2"}, True, "none of"),  # every controller started again
        ({"a1"}, {"a2"}, True, "none of"),  # one controller, restarted
        (set(), {"a1"}, True, "none of"),
    ],
)
def test_once_per_start_of_the_cluster(
    known: set[str] | None, live: set[str], announce: bool, why: str
) -> None:
    decision = alarm_list_rebuilt(None if known is None else frozenset(known), frozenset(live))
    assert decision.announce is announce
    assert why in decision.reason
    assert decision.record == frozenset(live)  # the running cluster, as the holder sees it
