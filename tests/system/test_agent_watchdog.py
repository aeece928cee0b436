"""The agent under systemd's watchdog: READY=1, then WATCHDOG=1 from its heartbeat loop; a
frozen agent (SIGSTOP) stops petting the watchdog, so systemd would restart it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.conftest import free_port


def test_agent_pets_the_systemd_watchdog_only_while_alive(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "node": "cmp-1",
                "key": "k" * 16,
                "interval": 0.05,
                "planes": [
                    {"name": "mgmt", "local": "127.0.0.1", "controller": f"127.0.0.1:{free_port()}"}
                ],
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vimha", "agent", "--config", str(config)],
        env={**os.environ, "NOTIFY_SOCKET": path},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def messages(seconds: float) -> list[str]:
        got, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                got.append(sock.recv(100).decode())
        return got

    try:
        first = messages(3.0)
        assert "READY=1" in first and first.count("WATCHDOG=1") >= 10
        proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        messages(0.3)  # drain what was already queued
        assert messages(1.0) == []  # frozen: no more petting
        proc.send_signal(signal.SIGCONT)
        assert "WATCHDOG=1" in messages(1.0)
        proc.terminate()
        assert "STOPPING=1" in messages(2.0)
    finally:
        proc.kill()
        proc.wait(10)
        sock.close()
