"""The notification consumer (vimha.cloud.consumer) as a real process the tests can kill."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from vimha.cloud.consumer import spawn


class ConsumerProcess:
    def __init__(self, out: Path, port: int, *extra: str) -> None:
        self.out = out
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> None:
        self.proc = spawn(self.port, str(self.out), *self.extra)

    def kill(self) -> None:
        """kill -9, and reap it so that the port is free."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()

    def received(self) -> list[dict[str, Any]]:
        """Notifications received so far, in arrival order (duplicates included)."""
        if not self.out.exists():
            return []
        out = []
        text = self.out.read_text()
        complete = text[: text.rfind("\n") + 1]  # a line being written is read next time
        for line in complete.splitlines():
            if line.strip():
                out.append(json.loads(line)["n"])
        return out

    def _check(self, predicate: Any, deadline: float) -> list[dict[str, Any]] | None:
        got = self.received()
        if predicate(got):
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; received {len(got)} notifications")
        return None

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while (got := self._check(predicate, deadline)) is None:
            time.sleep(0.05)
        return got

    async def until(self, predicate: Any, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Like wait_for, without blocking the event loop (for in-process controllers)."""
        deadline = time.monotonic() + timeout
        while (got := self._check(predicate, deadline)) is None:
            await asyncio.sleep(0.02)
        return got
