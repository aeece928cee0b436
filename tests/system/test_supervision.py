"""The agent's watchdog with real processes (FAULT-2/3/4): a service killed with SIGKILL or
frozen with SIGSTOP is restarted, and its PROCESSING_ERROR_ALARM is raised then cleared; a
service that keeps failing exhausts its restart budget and raises a CRITICAL alarm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.system.conftest import TOKEN, ControllerProcess


def service_pid(port: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"http.server" in cmd and str(port).encode() in cmd:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state not in ("Z", "X"):
                return int(entry.name)
    return None


@pytest.fixture
def agent(controller: ControllerProcess, tmp_path: Path) -> Iterator[dict[str, Any]]:
    port = free_port()
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": "cmp-1",
                "key": "k" * 16,
                "controller_url": controller.url,
                "token": TOKEN,
                "planes": [
                    {"name": "mgmt", "local": "127.0.0.1", "controller": f"127.0.0.1:{free_port()}"}
                ],
                "services": [
                    {
                        "name": "api",
                        "check": "http",
                        "target": f"http://127.0.0.1:{port}/",
                        "command": [
                            sys.executable,
                            "-m",
                            "http.server",
                            str(port),
                            "--bind",
                            "127.0.0.1",
                        ],
                        "interval": 0.1,
                        "timeout": 0.5,
                        "restart": {"max_restarts": 5, "window": 60, "start_grace": 5},
                    },
                    {
                        "name": "crashy",
                        "command": [sys.executable, "-c", "import sys; sys.exit(3)"],
                        "interval": 0.1,
                        "restart": {"max_restarts": 2, "window": 60, "start_grace": 0.2},
                    },
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vimha", "agent", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield {"port": port, "proc": proc}
    finally:
        proc.terminate()
        proc.wait(10)


def alarms(ctl: ControllerProcess, obj: str, cleared: bool = False) -> list[dict[str, Any]]:
    flt = f"(eq,managedObjectId,{obj})"
    if cleared:
        flt += ";(eq,perceivedSeverity,CLEARED)"
    with ctl.client() as c:
        return list(c.get("/vimfm/v1/alarms", params={"filter": flt}).json())


def wait_until(pred: Any, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
    return result


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def test_killed_and_frozen_services_are_restarted_with_alarms(
    controller: ControllerProcess, agent: dict[str, Any]
) -> None:
    port = agent["port"]
    wait_until(lambda: answers(port))
    for round_, sig in enumerate((signal.SIGKILL, signal.SIGSTOP), start=1):
        pid = wait_until(lambda: service_pid(port))
        os.kill(pid, sig)
        new_pid = wait_until(lambda p=pid: (q := service_pid(port)) and q != p and q)
        assert new_pid != pid
        wait_until(lambda: answers(port))
        # The restart's alarm was raised and is cleared once the service answers again.
        wait_until(lambda n=round_: len(alarms(controller, "cmp-1/api", cleared=True)) == n)
        assert alarms(controller, "cmp-1/api") == []
    with controller.client() as c:
        [first, second] = c.get(
            "/vimfm/v1/alarms",
            params={"filter": "(eq,managedObjectId,cmp-1/api);(eq,perceivedSeverity,CLEARED)"},
        ).json()
        history = c.get(f"/vimfm/v1/alarms/{second['id']}/history").json()
    assert [h["kind"] for h in history] == ["RAISED", "CLEARED"]
    assert first["eventType"] == "PROCESSING_ERROR_ALARM"
    assert any("stopped (SIGSTOP)" in d for d in second["faultDetails"])


def test_a_service_failing_beyond_its_budget_raises_a_critical_alarm(
    controller: ControllerProcess, agent: dict[str, Any]
) -> None:
    found = wait_until(
        lambda: [
            a for a in alarms(controller, "cmp-1/crashy") if a["faultType"] == "SERVICE_GAVE_UP"
        ]
    )
    assert found[0]["perceivedSeverity"] == "CRITICAL"
    assert "gave up" in " ".join(found[0]["faultDetails"])
