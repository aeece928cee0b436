"""The instance state machine: requests allowed per state, observations ending tasks."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain.compute import (
    Flavor,
    Instance,
    InstanceSpec,
    InstanceStatus,
    Power,
    TaskState,
)
from vimha.domain.errors import Conflict
from vimha.domain.instance_states import Observation, Request, Seen, observe, request

NOW = datetime(2026, 12, 1, tzinfo=UTC)
S = InstanceStatus


def inst(status: S = S.ACTIVE, task: TaskState | None = None, **kw: object) -> Instance:
    spec = InstanceSpec("img", Flavor("f", "tiny", 1, 128, 1), ())
    base = Instance("i-1", "vnf-vdu-0", spec, status, NOW, NOW, task_state=task, host="cmp-1")
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "what", "task", "power"),
    [
        (S.ACTIVE, Request.REBOOT, TaskState.REBOOTING, Power.RUNNING),
        (S.ACTIVE, Request.REBOOT_HARD, TaskState.REBOOTING_HARD, Power.RUNNING),
        (S.ERROR, Request.REBOOT_HARD, TaskState.REBOOTING_HARD, Power.RUNNING),
        (S.SHUTOFF, Request.REBOOT_HARD, TaskState.REBOOTING_HARD, Power.RUNNING),
        (S.ACTIVE, Request.STOP, TaskState.POWERING_OFF, Power.STOPPED),
        (S.ERROR, Request.STOP, TaskState.POWERING_OFF, Power.STOPPED),
        (S.SHUTOFF, Request.START, TaskState.POWERING_ON, Power.RUNNING),
        (S.ACTIVE, Request.PAUSE, TaskState.PAUSING, Power.PAUSED),
        (S.PAUSED, Request.UNPAUSE, TaskState.UNPAUSING, Power.RUNNING),
        (S.ACTIVE, Request.DELETE, TaskState.DELETING, Power.DELETED),
        (S.BUILDING, Request.DELETE, TaskState.DELETING, Power.DELETED),
    ],
)
def test_allowed_requests_set_task_and_power(
    status: S, what: Request, task: TaskState, power: Power
) -> None:
    new = request(inst(status), what, NOW + timedelta(seconds=1))
    assert (new.task_state, new.power, new.status) == (task, power, status)
    assert new.version == 2 and new.updated_at > NOW


@pytest.mark.parametrize(
    ("status", "what"),
    [
        (S.SHUTOFF, Request.REBOOT),
        (S.ERROR, Request.REBOOT),
        (S.ACTIVE, Request.START),
        (S.SHUTOFF, Request.PAUSE),
        (S.ACTIVE, Request.UNPAUSE),
        (S.BUILDING, Request.STOP),
        (S.DELETED, Request.DELETE),
    ],
)
def test_refused_requests_say_why(status: S, what: Request) -> None:
    with pytest.raises(Conflict, match=f"cannot {what.value} instance vnf-vdu-0 while it is"):
        request(inst(status), what, NOW)


def test_no_request_while_a_task_runs_but_delete_and_hard_reboot() -> None:
    busy = inst(S.ACTIVE, TaskState.REBOOTING, reboot_seq=1)
    with pytest.raises(Conflict, match="while it is rebooting"):
        request(busy, Request.STOP, NOW)
    assert request(busy, Request.REBOOT_HARD, NOW).reboot_seq == 2
    assert request(busy, Request.DELETE, NOW).task_state is TaskState.DELETING


def test_reboots_are_numbered() -> None:
    once = request(inst(), Request.REBOOT, NOW)
    assert (once.reboot_seq, once.reboot_hard) == (1, False)


def test_delete_without_a_host_that_reports_completes_at_once() -> None:
    gone = request(inst(), Request.DELETE, NOW, host_gone=True)
    assert gone.status is S.DELETED and gone.task_state is None


def test_building_becomes_active_when_the_guest_runs() -> None:
    out = observe(inst(S.BUILDING, TaskState.SPAWNING), Observation(Seen.RUNNING, 1), NOW)
    assert out.instance is not None and out.instance.status is S.ACTIVE
    assert out.instance.launched_at == NOW and out.finished is TaskState.SPAWNING


def test_a_reboot_ends_only_once_the_agent_did_that_reboot() -> None:
    rebooting = inst(S.ACTIVE, TaskState.REBOOTING, reboot_seq=3)
    assert observe(rebooting, Observation(Seen.RUNNING, 1, rebooted=2), NOW).instance is None
    done = observe(rebooting, Observation(Seen.RUNNING, 1, rebooted=3), NOW)
    assert done.instance is not None and done.instance.task_state is None


@pytest.mark.parametrize(
    ("task", "seen", "status"),
    [
        (TaskState.POWERING_OFF, Seen.SHUTOFF, S.SHUTOFF),
        (TaskState.POWERING_ON, Seen.RUNNING, S.ACTIVE),
        (TaskState.PAUSING, Seen.PAUSED, S.PAUSED),
        (TaskState.UNPAUSING, Seen.RUNNING, S.ACTIVE),
    ],
)
def test_power_tasks_end_on_the_state_asked_for(task: TaskState, seen: Seen, status: S) -> None:
    out = observe(inst(S.ACTIVE, task), Observation(seen, 1), NOW)
    assert out.instance is not None and out.instance.status is status
    assert out.finished is task and out.failure is None


def test_a_crash_is_a_failure_with_a_fault() -> None:
    out = observe(inst(), Observation(Seen.CRASHED, 1, detail="killed by SIGSEGV"), NOW)
    assert out.instance is not None and out.instance.status is S.ERROR
    assert out.failure == "guest crashed: killed by SIGSEGV"
    assert out.instance.fault is not None and "SIGSEGV" in out.instance.fault.message


@pytest.mark.parametrize("seen", [Seen.RUNNING, Seen.SHUTOFF, Seen.CRASHED, Seen.GONE])
def test_an_unknown_instance_stays_unknown_while_its_host_is_judged_failed(seen: Seen) -> None:
    unknown = inst(S.UNKNOWN)
    out = observe(unknown, Observation(seen, 1), NOW, host_failed=True)
    assert out.instance is None and "judged failed" in out.reason
    # heard again: the report is believed
    back = observe(unknown, Observation(Seen.RUNNING, 1), NOW)
    assert back.instance is not None and back.instance.status is S.ACTIVE
    # an instance its host's failure did not make UNKNOWN is judged as ever
    crashed = observe(inst(), Observation(Seen.CRASHED, 1), NOW, host_failed=True)
    assert crashed.instance is not None and crashed.instance.status is S.ERROR


def test_a_guest_stopped_by_itself_while_it_should_run_is_a_failure() -> None:
    out = observe(inst(), Observation(Seen.SHUTOFF, 1, detail="watchdog: poweroff"), NOW)
    assert out.instance is not None and out.instance.status is S.SHUTOFF
    assert out.failure is not None and "watchdog: poweroff" in out.failure


def test_deletion_completes_when_the_agent_no_longer_has_the_guest() -> None:
    out = observe(inst(S.ACTIVE, TaskState.DELETING), Observation(Seen.GONE, 1), NOW)
    assert out.instance is not None and out.instance.status is S.DELETED


def test_a_report_of_an_older_incarnation_changes_nothing() -> None:
    newer = inst(S.ACTIVE, incarnation=2)
    assert observe(newer, Observation(Seen.CRASHED, 1), NOW).instance is None


def test_an_active_guest_that_vanished_is_an_error() -> None:
    out = observe(inst(), Observation(Seen.GONE, 1), NOW)
    assert out.instance is not None and out.instance.status is S.ERROR


def test_a_building_instance_without_a_guest_yet_waits() -> None:
    assert (
        observe(inst(S.BUILDING, TaskState.SPAWNING), Observation(Seen.GONE, 1), NOW).instance
        is None
    )
