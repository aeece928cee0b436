"""What the libvirt driver shares: libvirt's event loop on a thread of its own, the one place
where libvirt errors become vimha's, the mapping of libvirt's events and states, and the
serial console (a libvirt stream).

libvirt delivers events (and stream data) only while something runs its event loop:
`virEventRunDefaultImpl` on a daemon thread, registered once per process before any
connection is opened. Callbacks run on that thread; they only capture what they were given
and hand it to asyncio with `call_soon_threadsafe`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libvirt

from vimha.domain.errors import Conflict, InvalidInput, NotFound, VimhaError
from vimha.ports.hypervisor import GuestEventKind, GuestState, HypervisorUnavailable

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_started = False


def ensure_event_loop() -> None:
    """Register libvirt's default event loop implementation and run it on a daemon thread
    (once per process; before the first connection, or that connection gets no events)."""
    global _loop_started
    with _loop_lock:
        if _loop_started:
            return
        # Errors are raised as exceptions and translated; libvirt must not also print them.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except libvirt.libvirtError:  # pragma: no cover - logged, the loop goes on
                    log.exception("libvirt event loop")

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _loop_started = True


# Errors that say the connection or the daemon failed: retry later, on a new connection.
_UNAVAILABLE = {
    libvirt.VIR_ERR_SYSTEM_ERROR,
    libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_NO_CONNECT,
    libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_OPERATION_TIMEOUT,
    libvirt.VIR_ERR_AUTH_FAILED,
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_OPERATION_FAILED,
    libvirt.VIR_ERR_RESOURCE_BUSY,
}
_INVALID = {
    libvirt.VIR_ERR_XML_ERROR,
    libvirt.VIR_ERR_XML_DETAIL,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_INVALID_ARG,
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
}


def translate(e: libvirt.libvirtError, what: str) -> VimhaError:
    """The one place where a libvirt error becomes vimha's."""
    code = e.get_error_code()
    detail = f"{what}: {e.get_error_message() or e}"
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return NotFound(detail)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return Conflict(detail)
    if code in _INVALID:
        return InvalidInput(detail)
    if code not in _UNAVAILABLE:
        log.warning("libvirt error %s taken as temporary: %s", code, detail)
    return HypervisorUnavailable(detail)


def connection_lost(e: libvirt.libvirtError) -> bool:
    """The connection itself is unusable (open a new one)."""
    return e.get_error_code() in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC) or (
        e.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
        and e.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
    )


def guest_state(state: int, reason: int) -> tuple[GuestState, str]:
    """A domain's (state, reason) as the port's GuestState and a detail."""
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return GuestState.RUNNING, ""
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:
        return GuestState.RUNNING, "shutting down"
    if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
        return GuestState.PAUSED, _PAUSED_REASONS.get(reason, "")
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return GuestState.CRASHED, "panicked"
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
        return GuestState.CRASHED, "crashed"
    if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_FAILED:
        return GuestState.CRASHED, "failed to start"
    return GuestState.SHUTOFF, _SHUTOFF_REASONS.get(reason, "")


_PAUSED_REASONS = {
    libvirt.VIR_DOMAIN_PAUSED_IOERROR: "I/O error",
    libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
    libvirt.VIR_DOMAIN_PAUSED_USER: "paused",
    libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
}
_SHUTOFF_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shut down",
    libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
}
WATCHDOG_ACTIONS = {
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_NONE: "none",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_PAUSE: "pause",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_RESET: "reset",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_POWEROFF: "poweroff",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_DEBUG: "debug",
    libvirt.VIR_DOMAIN_EVENT_WATCHDOG_INJECTNMI: "inject-nmi",
}
_STOPPED_DETAILS = {
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN: "shut down",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED: "destroyed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED: "QEMU failed",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED: "migrated",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED: "saved",
    libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT: "from snapshot",
}


def lifecycle_kind(
    event: int, detail: int, through_port: bool
) -> tuple[GuestEventKind, str] | None:
    """A libvirt lifecycle event as the port's event kind, or None for those it ignores
    (defined, undefined, a guest's shutdown in progress)."""
    if event == libvirt.VIR_DOMAIN_EVENT_STARTED:
        return GuestEventKind.STARTED, ""
    if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
        if detail in (
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
            libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY,
        ):
            return None  # paused for a migration's switch-over (issue 19)
        if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR:
            return GuestEventKind.PAUSED, "I/O error"
        if detail == libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG:
            return GuestEventKind.PAUSED, "watchdog"
        return GuestEventKind.PAUSED, ""
    if event == libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED:
        return GuestEventKind.PAUSED, "guest suspended itself"
    if event == libvirt.VIR_DOMAIN_EVENT_RESUMED:
        return GuestEventKind.RESUMED, ""
    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        return GuestEventKind.CRASHED, "panicked"
    if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
        why = _STOPPED_DETAILS.get(detail, "")
        if through_port or detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED:
            return GuestEventKind.STOPPED, why
        if detail in (
            libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED,
            libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED,
        ):
            return GuestEventKind.CRASHED, why
        return GuestEventKind.DIED, why
    return None


def tail(path: Path, size: int) -> bytes:
    """The last `size` bytes of a file (b"" if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            end = f.tell()
            f.seek(max(0, end - size))
            return f.read()
    except OSError:
        return b""


class StreamConsole:
    """A domain's serial console: `history` from its log file, then the live pty through a
    non-blocking libvirt stream whose data the event loop thread hands to asyncio."""

    def __init__(
        self,
        stream: Any,
        history: bytes,
        loop: asyncio.AbstractEventLoop,
        call: Callable[..., Any],
    ) -> None:
        self.history = history
        self._stream = stream
        self._loop = loop
        self._call = call  # the driver's translated thread call
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._closed = False
        events = (
            libvirt.VIR_STREAM_EVENT_READABLE
            | libvirt.VIR_STREAM_EVENT_ERROR
            | libvirt.VIR_STREAM_EVENT_HANGUP
        )
        stream.eventAddCallback(events, self._on_event, None)

    def _on_event(self, stream: Any, events: int, _opaque: object) -> None:
        # On libvirt's event thread: drain what is there, hand it over.
        chunks: list[bytes] = []
        eof = False
        if events & libvirt.VIR_STREAM_EVENT_READABLE:
            while True:
                try:
                    data = stream.recv(65536)
                except libvirt.libvirtError:
                    eof = True
                    break
                if data == -2:  # would block
                    break
                if not data:
                    eof = True
                    break
                chunks.append(data)
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            eof = True
        if eof:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
            chunks.append(b"")
        for chunk in chunks:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, chunk)

    async def read(self) -> bytes:
        if self._closed:
            return b""
        data = await self._queue.get()
        if not data:
            self._closed = True
        return data

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise Conflict("console closed")
        view = memoryview(data)
        while view:
            sent = await self._call(self._stream.send, bytes(view), what="console write")
            if sent == -2:  # the stream's buffer is full: let it drain
                await asyncio.sleep(0.01)
                continue
            view = view[sent:]

    async def close(self) -> None:
        if self._closed and self._stream is None:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is None:
            return

        def finish() -> None:
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventRemoveCallback()
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()

        await asyncio.to_thread(finish)
        self._queue.put_nowait(b"")
