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

TOKEN = "system-admin-token-0123456789"


def vimha(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vimha", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


class ControllerProcess:
    def __init__(self, base: Path, store_url: str | None = None, **overrides: Any) -> None:
        self.base = base
        self.port = free_port()
        self.config = base / "controller.yaml"
        cfg: dict[str, Any] = {
            "vim_connection_id": "vim-test",
            "api": {"port": self.port},
            "store": {"url": store_url or f"sqlite:///{base / 'vimha.db'}"},
            "auth": {"tokens": [{"name": "admin", "token": TOKEN, "role": "admin"}]},
            "delivery": {"initial_backoff": 0.05, "max_backoff": 0.5, "timeout": 2},
        }
        api = {**cfg["api"], **overrides.pop("api", {})}
        cfg.update(overrides, api=api)
        self.scheme = "https" if api.get("tls") else "http"
        self.ca: str | None = api["tls"]["cert_file"] if api.get("tls") else None
        self.config.write_text(yaml.safe_dump(cfg))
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = base / "controller.log"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def migrate(self) -> None:
        result = vimha("db", "upgrade", "--config", str(self.config))
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vimha", "controller", "--config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"controller exited: {self.log.read_text()[-2000:]}")
            try:
                r = httpx.get(f"{self.url}/vimfm/api_versions", timeout=0.5, verify=self.ca or True)
                if r.status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        self.kill()  # not left running: the fixture's teardown never sees a failed start
        raise AssertionError("controller did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
            verify=self.ca or True,
        )


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    ctl = ControllerProcess(tmp_path)
    ctl.migrate()
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()
