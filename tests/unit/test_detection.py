"""Heartbeat failure detector per plane, with flap damping (pure, fake times)."""

from __future__ import annotations

import itertools
import math

import pytest

from vimha.domain.detection import DetectionPolicy, PlaneState, PlaneStatus, fell_silent_together
from vimha.domain.errors import InvalidInput

P = DetectionPolicy(interval=0.1, misses=3, up_after=3)


def run(events: list[tuple[str, float]]) -> list[PlaneStatus]:
    """Apply ("hb", t) heartbeats and ("tick", t) evaluations; status after each."""
    state = PlaneState()
    out = []
    for kind, t in events:
        state = state.heard(t, P) if kind == "hb" else state.tick(t, P)
        out.append(state.status)
    return out


def test_up_after_consecutive_heartbeats() -> None:
    assert run([("hb", 0.0), ("hb", 0.1), ("hb", 0.2)]) == [
        PlaneStatus.UNKNOWN,
        PlaneStatus.UNKNOWN,
        PlaneStatus.UP,
    ]


def test_down_after_interval_times_misses() -> None:
    beats = [("hb", 0.0), ("hb", 0.1), ("hb", 0.2)]
    assert run([*beats, ("tick", 0.49)])[-1] is PlaneStatus.UP  # 0.29 s of silence
    assert run([*beats, ("tick", 0.51)])[-1] is PlaneStatus.DOWN  # 0.31 s > 0.3 s


def test_flapping_link_does_not_come_back_on_one_heartbeat() -> None:
    beats = [("hb", 0.0), ("hb", 0.1), ("hb", 0.2), ("tick", 0.6)]
    flap = [*beats, ("hb", 0.61), ("tick", 0.95), ("hb", 0.96), ("tick", 1.3)]
    assert run(flap)[3:] == [PlaneStatus.DOWN] * 5
    steady = [*beats, ("hb", 0.61), ("hb", 0.7), ("hb", 0.8)]
    assert run(steady)[-1] is PlaneStatus.UP


def test_a_plane_never_heard_stays_unknown() -> None:
    assert run([("tick", 5.0)]) == [PlaneStatus.UNKNOWN]


def test_heard_once_then_silent_is_down() -> None:
    assert run([("hb", 0.0), ("tick", 1.0)])[-1] is PlaneStatus.DOWN


def test_changed_at_records_the_transition() -> None:
    state = PlaneState()
    for t in (0.0, 0.1, 0.2):
        state = state.heard(t, P)
    assert state.changed_at == 0.2
    state = state.tick(1.0, P)
    assert state.changed_at == 1.0
    assert state.tick(2.0, P).changed_at == 1.0


@pytest.mark.parametrize("kwargs", [{"interval": 0}, {"misses": 0}, {"up_after": 0}])
def test_invalid_policy(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidInput):
        DetectionPolicy(**kwargs)  # type: ignore[arg-type]


# -- phi-accrual ----------------------------------------------------------------------------
PHI = DetectionPolicy(interval=0.1, misses=3, up_after=2, detector="phi")


def learnt(gaps: list[float], policy: DetectionPolicy = PHI) -> PlaneState:
    state, t = PlaneState(), 0.0
    state = state.heard(t, policy)
    for gap in gaps:
        t += gap
        state = state.heard(t, policy)
    return state


def test_phi_learns_a_steady_link_and_suspects_it_soon_after_the_usual_gap() -> None:
    state = learnt([0.1] * 50)
    assert state.status is PlaneStatus.UP and abs(state.mean - 0.1) < 1e-9
    last = state.last_heard
    assert last is not None
    assert not state.silent(last + 0.15, PHI)
    assert state.silent(last + 0.3, PHI)
    assert state.tick(last + 0.3, PHI).status is PlaneStatus.DOWN


def test_phi_gives_a_jittery_link_more_slack_than_a_steady_one() -> None:
    steady = learnt([0.1] * 100)
    jittery = learnt([0.05, 0.25] * 50)
    assert jittery.mean > steady.mean
    for s in (steady, jittery):
        assert s.last_heard is not None
    gap = 0.4
    assert steady.silent(steady.last_heard + gap, PHI)  # type: ignore[operator]
    assert not jittery.silent(jittery.last_heard + gap, PHI)  # type: ignore[operator]


def test_phi_grows_with_silence_and_is_defined_everywhere() -> None:
    state = learnt([0.1] * 30)
    assert state.last_heard is not None
    values = [state.phi(state.last_heard + d / 100, PHI) for d in range(0, 300)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert values[0] < 1 and math.isinf(state.phi(state.last_heard + 1000, PHI))
    assert PlaneState().phi(5.0, PHI) == math.inf


def test_phi_uses_the_fixed_timeout_until_it_has_learnt() -> None:
    state = learnt([0.1] * 3)
    assert state.samples < PHI.phi_min_samples and state.last_heard is not None
    assert not state.silent(state.last_heard + 0.29, PHI)
    assert state.silent(state.last_heard + 0.31, PHI)


def test_phi_policy_is_validated() -> None:
    with pytest.raises(InvalidInput):
        DetectionPolicy(detector="phi", phi_threshold=0)
    with pytest.raises(InvalidInput):
        DetectionPolicy(detector="phi", phi_min_std=-1)


def test_planes_that_fell_silent_in_the_same_round_are_not_a_link_fault() -> None:
    policy = DetectionPolicy(interval=0.1, misses=3)
    down = [PlaneState(PlaneStatus.DOWN, last_heard=10.0)]
    # an agent killed between its two heartbeats: the other plane is one round ahead
    assert fell_silent_together(down, [PlaneState(PlaneStatus.UP, last_heard=10.1)], policy)
    # a lost link: the other plane went on beating until the lost one timed out
    assert not fell_silent_together(down, [PlaneState(PlaneStatus.UP, last_heard=10.28)], policy)
    assert not fell_silent_together([], [PlaneState(PlaneStatus.UP, last_heard=10.0)], policy)
