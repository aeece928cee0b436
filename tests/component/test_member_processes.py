"""How the agent starts and kills the servers of its members (agent/handlers.py, agent/services.py):
the servers it starts run at the ordinary one, the balancers' processes at the agent's
(agent/handlers.py, agent/services.py). Real processes; root, to raise a priority."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_system
from vimha.agent.handlers import MEMBER_LOG_LIMIT, HandlerFailed, spawn_member
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


def test_what_a_member_says_is_kept_in_its_log_set_aside_once_large(tmp_path: Path) -> None:
    """A member's stdout and stderr are appended to its log (PostgreSQL, HAProxy and
    keepalived say there why they failed); a log grown beyond the limit is kept as `.1`."""
    log = tmp_path / "db.log"
    first = spawn_member(["sh", "-c", "echo out; echo err >&2"], log=log)
    assert first.wait(5) == 0
    assert log.read_text().split() == ["out", "err"]
    again = spawn_member(["sh", "-c", "echo again"], log=log)
    assert again.wait(5) == 0
    assert log.read_text().split() == ["out", "err", "again"]
    log.write_bytes(b"x" * (MEMBER_LOG_LIMIT + 1))
    third = spawn_member(["sh", "-c", "echo fresh"], log=log)
    assert third.wait(5) == 0
    assert log.read_text() == "fresh\n"
    assert (tmp_path / "db.log.1").stat().st_size == MEMBER_LOG_LIMIT + 1


def test_a_member_whose_log_cannot_be_opened_is_not_started(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HandlerFailed, match="its log"):
        spawn_member(["true"], log=tmp_path / "file" / "db.log")
