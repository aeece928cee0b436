"""The instance state machine (issue 14): which requests an instance accepts in which state,
and what an agent's observation of its guest makes of it. Pure: each function returns the
new instance (or raises Conflict) with a one-line reason.

Requests set what the guest should be doing (`power`, a reboot number) and a task state;
the agent does it and reports; the observation ends the task. Nova's rules, where it has
them: a soft reboot only from ACTIVE, a hard reboot from any state that has a guest, no
request while another task runs except delete and a hard reboot over a reboot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from vimha.domain.compute import Fault, Instance, InstanceStatus, Power, TaskState
from vimha.domain.errors import Conflict

S = InstanceStatus


class Request(StrEnum):
    REBOOT = "reboot"
    REBOOT_HARD = "reboot-hard"
    STOP = "stop"
    START = "start"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    DELETE = "delete"


ALLOWED: dict[Request, frozenset[InstanceStatus]] = {
    Request.REBOOT: frozenset({S.ACTIVE}),
    Request.REBOOT_HARD: frozenset({S.ACTIVE, S.SHUTOFF, S.PAUSED, S.ERROR}),
    Request.STOP: frozenset({S.ACTIVE, S.ERROR}),
    Request.START: frozenset({S.SHUTOFF}),
    Request.PAUSE: frozenset({S.ACTIVE}),
    Request.UNPAUSE: frozenset({S.PAUSED}),
    Request.DELETE: frozenset(set(S) - {S.DELETED}),
}
# Tasks a request may interrupt (None: no task running).
INTERRUPTS: dict[Request, frozenset[TaskState | None]] = {
    Request.REBOOT_HARD: frozenset({None, TaskState.REBOOTING, TaskState.REBOOTING_HARD}),
    Request.DELETE: frozenset({None, *TaskState}),
}
EFFECT: dict[Request, tuple[TaskState, Power]] = {
    Request.REBOOT: (TaskState.REBOOTING, Power.RUNNING),
    Request.REBOOT_HARD: (TaskState.REBOOTING_HARD, Power.RUNNING),
    Request.STOP: (TaskState.POWERING_OFF, Power.STOPPED),
    Request.START: (TaskState.POWERING_ON, Power.RUNNING),
    Request.PAUSE: (TaskState.PAUSING, Power.PAUSED),
    Request.UNPAUSE: (TaskState.UNPAUSING, Power.RUNNING),
    Request.DELETE: (TaskState.DELETING, Power.DELETED),
}


def request(instance: Instance, what: Request, now: datetime, host_gone: bool = False) -> Instance:
    """The instance once `what` is asked of it. Conflict (409) says why it cannot be.

    `host_gone`: its host will never report again (no host, or fenced): a delete completes
    at once (Nova's local delete), as nothing is left to stop."""
    if instance.status not in ALLOWED[what]:
        raise Conflict(
            f"cannot {what.value} instance {instance.name} while it is {instance.status.value}"
        )
    if instance.host is None and what is not Request.DELETE:
        # Never placed (Nova's server that no host could take): nothing would carry it out.
        raise Conflict(f"cannot {what.value} instance {instance.name}: it has no host")
    if instance.task_state not in INTERRUPTS.get(what, frozenset({None})):
        assert instance.task_state is not None
        raise Conflict(
            f"cannot {what.value} instance {instance.name} while it is {instance.task_state.value}"
        )
    task, power = EFFECT[what]
    if what is Request.DELETE and (host_gone or instance.host is None):
        return instance.evolve(now, status=S.DELETED, task_state=None, power=Power.DELETED)
    changes: dict[str, object] = {"task_state": task, "power": power}
    if what in (Request.REBOOT, Request.REBOOT_HARD):
        changes["reboot_seq"] = instance.reboot_seq + 1
        changes["reboot_hard"] = what is Request.REBOOT_HARD
    return instance.evolve(now, **changes)


class Seen(StrEnum):
    """What the agent reports of a guest."""

    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SHUTOFF = "SHUTOFF"
    CRASHED = "CRASHED"
    GONE = "GONE"  # the agent has no such guest (after a destroy, or lost)


@dataclass(frozen=True, slots=True)
class Observation:
    state: Seen
    incarnation: int
    rebooted: int = 0  # the last reboot number the agent carried out
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an observation changes: the new instance (None: nothing), why, the failure it
    reveals (for an alarm), and the task it ends with its result."""

    instance: Instance | None
    reason: str
    failure: str | None = None
    finished: TaskState | None = None
    ok: bool = True


_DONE = {
    Seen.RUNNING: {
        TaskState.SPAWNING,
        TaskState.REBUILDING,
        TaskState.POWERING_ON,
        TaskState.UNPAUSING,
        TaskState.RECOVERING,
    },
    Seen.PAUSED: {TaskState.PAUSING},
    Seen.SHUTOFF: {TaskState.POWERING_OFF},
}
_STATUS = {Seen.RUNNING: S.ACTIVE, Seen.PAUSED: S.PAUSED, Seen.SHUTOFF: S.SHUTOFF}


def observe(
    instance: Instance, seen: Observation, now: datetime, host_failed: bool = False
) -> Outcome:
    """The instance after its agent reported its guest; pure. `host_failed`: its host is
    judged failed (DOWN or FENCED): an instance UNKNOWN for that stays UNKNOWN whatever the
    report says, until the host is heard again."""
    if seen.incarnation < instance.incarnation or instance.status is S.DELETED:
        return Outcome(None, f"a report of incarnation {seen.incarnation}: stale")
    if host_failed and instance.status is S.UNKNOWN:
        # A report from a host unheard on every plane is late, or came round a partition;
        # taken, it would make the instance ACTIVE until recovery's next round marks it
        # UNKNOWN again: its alarm raised and cleared every few seconds.
        return Outcome(None, "its host is judged failed: unknown until it is heard again")
    if instance.status is S.MIGRATING:
        # Its migration's phases decide (the guest leaves the source, is stopped there for a
        # cold one); a failed migration gives it back to what its agent reports.
        return Outcome(None, "migrating: its migration decides")
    task = instance.task_state
    if seen.state is Seen.GONE:
        if task is TaskState.DELETING:
            new = instance.evolve(now, status=S.DELETED, task_state=None)
            return Outcome(new, "guest destroyed", finished=task)
        if instance.status in (S.BUILDING, S.REBUILDING, S.SHUTOFF, S.ERROR):
            return Outcome(None, "no guest yet")
        return _failed(instance, now, f"guest is gone: {seen.detail or 'no longer on its host'}")
    if seen.state is Seen.CRASHED:
        if instance.status is S.ERROR and task is None:
            return Outcome(None, "still crashed")
        if task is TaskState.DELETING:
            return Outcome(None, "crashed while being deleted")
        return _failed(instance, now, f"guest crashed: {seen.detail or 'it ended on its own'}")
    status = _STATUS[seen.state]
    if task in (TaskState.REBOOTING, TaskState.REBOOTING_HARD):
        if seen.state is Seen.RUNNING and seen.rebooted >= instance.reboot_seq:
            return Outcome(
                instance.evolve(now, status=S.ACTIVE, task_state=None), "rebooted", finished=task
            )
        return Outcome(None, "reboot in progress")
    if task is TaskState.DELETING:
        return Outcome(None, "being deleted")
    # A stopped instance moved by a maintenance session is rebuilt stopped.
    rebuilt_stopped = (
        task is TaskState.RECOVERING
        and seen.state is Seen.SHUTOFF
        and instance.power is Power.STOPPED
    )
    if (
        task in _DONE[seen.state]
        or rebuilt_stopped
        or (instance.status is S.BUILDING and seen.state is Seen.RUNNING)
    ):
        changes: dict[str, object] = {"status": status, "task_state": None}
        if instance.launched_at is None and seen.state is Seen.RUNNING:
            changes["launched_at"] = now
        return Outcome(
            instance.evolve(now, **changes), f"guest {seen.state.value.lower()}", finished=task
        )
    if task is not None:
        return Outcome(None, f"{task.value} in progress")
    if status is instance.status:
        return Outcome(None, "unchanged")
    # Nothing asked for it: the guest changed by itself (a watchdog's action, a shutdown
    # from inside, a reset that brought it back).
    if status is S.ACTIVE:
        return Outcome(instance.evolve(now, status=S.ACTIVE), "guest running again")
    what = f"guest {seen.state.value.lower()} by itself" + (
        f": {seen.detail}" if seen.detail else ""
    )
    fault = Fault(500, what, now)
    new = instance.evolve(now, status=status, fault=fault)
    return Outcome(new, what, failure=what if instance.power is Power.RUNNING else None)


def _failed(instance: Instance, now: datetime, what: str) -> Outcome:
    new = instance.evolve(now, status=S.ERROR, task_state=None, fault=Fault(500, what, now))
    return Outcome(new, what, failure=what, finished=instance.task_state, ok=False)
