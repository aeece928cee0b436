"""Watchdog decisions for a supervised service (FAULT-2, FAULT-3, FAULT-4).

A failed check (dead, zombie, stopped by SIGSTOP, not answering) makes the service restart
after a backoff; every restart raises a MAJOR PROCESSING_ERROR_ALARM that clears once the
service answers again. More than `max_restarts` within `window` seconds: give up and raise a
CRITICAL alarm. `decide` is pure: state and observation in, new state and actions out.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from vimha.domain.errors import InvalidInput


class ServiceStatus(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    GAVE_UP = "GAVE_UP"


class ActionKind(StrEnum):
    RESTART = "RESTART"
    RAISE_RESTART_ALARM = "RAISE_RESTART_ALARM"
    CLEAR_RESTART_ALARM = "CLEAR_RESTART_ALARM"
    RAISE_GAVE_UP_ALARM = "RAISE_GAVE_UP_ALARM"


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    start_grace: float = 5.0
    settle: float = 0.5

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.window <= 0 or self.start_grace < 0:
            raise InvalidInput("restart policy: max_restarts >= 0, window > 0, start_grace >= 0")
        if not 0 < self.backoff_initial <= self.backoff_max:
            raise InvalidInput("restart policy: need 0 < backoff_initial <= backoff_max")


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    reason: str


@dataclass(frozen=True, slots=True)
class ServiceState:
    name: str
    status: ServiceStatus = ServiceStatus.STARTING
    started_at: float = 0.0
    restarts: tuple[float, ...] = ()
    next_restart_at: float | None = None
    alarm_raised: bool = False
    last_failure: str = ""

    @property
    def restart_count(self) -> int:
        return len(self.restarts)


def decide(
    state: ServiceState, check_ok: bool, detail: str, now: float, policy: RestartPolicy
) -> tuple[ServiceState, list[Action]]:
    """One watchdog step: the latest check result at `now`."""
    name = state.name
    if state.status is ServiceStatus.GAVE_UP:
        return state, []
    if state.status is ServiceStatus.RESTARTING:
        assert state.next_restart_at is not None
        if now < state.next_restart_at:
            return state, []
        recent = (*tuple(t for t in state.restarts if now - t < policy.window), now)
        new = replace(
            state,
            status=ServiceStatus.STARTING,
            started_at=now,
            restarts=recent,
            next_restart_at=None,
        )
        return new, [
            Action(ActionKind.RESTART, f"restarting {name} ({len(recent)} in {policy.window:g}s)")
        ]
    if check_ok:
        if state.status is ServiceStatus.STARTING and now - state.started_at < policy.settle:
            return state, []  # a process that exits at once still looks alive for a moment
        if state.status is ServiceStatus.STARTING:
            actions = []
            if state.alarm_raised:
                actions.append(Action(ActionKind.CLEAR_RESTART_ALARM, f"{name} answers again"))
            return replace(state, status=ServiceStatus.RUNNING, alarm_raised=False), actions
        return state, []
    if state.status is ServiceStatus.STARTING and now - state.started_at < policy.start_grace:
        return state, []  # still starting: not a failure yet
    recent = tuple(t for t in state.restarts if now - t < policy.window)
    if len(recent) >= policy.max_restarts:
        reason = (
            f"{name} failed ({detail}) after {len(recent)} restarts in {policy.window:g}s: gave up"
        )
        return replace(state, status=ServiceStatus.GAVE_UP, last_failure=detail), [
            Action(ActionKind.RAISE_GAVE_UP_ALARM, reason)
        ]
    delay = min(policy.backoff_max, policy.backoff_initial * 2 ** len(recent))
    new = replace(
        state,
        status=ServiceStatus.RESTARTING,
        next_restart_at=now + delay,
        restarts=recent,
        alarm_raised=True,
        last_failure=detail,
    )
    actions = [
        Action(ActionKind.RAISE_RESTART_ALARM, f"{name} failed ({detail}); restart in {delay:.2f}s")
    ]
    if state.alarm_raised and state.status is ServiceStatus.STARTING:
        actions = [
            Action(
                ActionKind.RAISE_RESTART_ALARM,
                f"{name} failed again while starting ({detail}); restart in {delay:.2f}s",
            )
        ]
    return new, actions
