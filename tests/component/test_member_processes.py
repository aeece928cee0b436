"""How the agent starts and kills the servers of its members (agent/handlers.py, agent/services.py):
the servers it starts run at the ordinary one, the balancers' processes at the agent's
(agent/handlers.py, agent/services.py). Real processes; root, to raise a priority."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import require_system
from vimha.agent.handlers import spawn_member
from vimha.agent.services import SupervisedProcess
from vimha.servicespec import ServiceConfig


@pytest.fixture
def agent_priority() -> Iterator[None]:
    require_system(os.geteuid() == 0, "root (a higher priority)")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, -10)
    try:
        yield
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


def niceness(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def test_servers_run_at_the_ordinary_priority_balancers_at_the_agents(agent_priority: None) -> None:
    server = spawn_member(["sleep", "30"])
    balancer = spawn_member(["sleep", "30"], keep_priority=True)
    service = SupervisedProcess(
        ServiceConfig.model_validate({"name": "s", "command": ["sleep", "30"]})
    )
    service.start()
    try:
        assert niceness(server.pid) == 0
        assert niceness(balancer.pid) == -10
        assert service.proc is not None and niceness(service.proc.pid) == 0
    finally:
        for proc in (server, balancer, service.proc):
            if proc is not None:
                proc.kill()
                proc.wait()


def test_a_reaped_member_is_not_killed_by_its_old_number(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once reaped, a member's pid (its group's id) may be another process's: pids wrap
    around on a busy machine. Only a member not reaped yet is killed, with its group."""
    from vimha.agent import services

    done = spawn_member(["true"])
    done.wait()  # reaped
    live = spawn_member(["sleep", "30"])
    killed: list[int] = []
    real = os.killpg

    def spy(pgid: int, sig: int) -> None:
        killed.append(pgid)
        real(pgid, sig)

    monkeypatch.setattr(services.os, "killpg", spy)
    services.kill_group(done)
    services.kill_group(live)
    assert killed == [live.pid]
    assert live.wait(5) == -9
