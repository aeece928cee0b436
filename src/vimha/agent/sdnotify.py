"""systemd's notify protocol, for `Type=notify` and `WatchdogSec=`: READY=1 once, then
WATCHDOG=1 from the heartbeat loop itself, so a stalled agent stops petting the watchdog and
systemd restarts it. Without $NOTIFY_SOCKET every call does nothing."""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        self._address = address or None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if address else None

    def send(self, message: str) -> None:
        if self._sock is None or self._address is None:
            return
        with contextlib.suppress(OSError):  # systemd gone: nothing to tell
            self._sock.sendto(message.encode(), self._address)

    def ready(self) -> None:
        self.send("READY=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
