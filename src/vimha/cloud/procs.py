"""Starting the embedded cloud's helper programs as processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def spawn_module(
    module: str, port: int, *args: str, timeout: float = 15.0
) -> subprocess.Popen[bytes]:
    """`python -m module --port PORT args...`, once it accepts connections on 127.0.0.1."""
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{module} did not start on port {port}")
