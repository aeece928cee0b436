"""Supervised services of a node (FAULT-2/3/4): start, check, restart, report.

Checks: `process` (alive, not a zombie, not stopped by SIGSTOP), `tcp` (and accepts a
connection), `http` (and answers 2xx to GET) and `command` (and a check command exits 0
within the timeout). The process state is part of every check: a
stopped process still accepts TCP connections into the kernel's backlog. Decisions come from
domain/supervision.py; alarms go to the controller as native fault events, in order, retried
while the controller is unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import subprocess
from datetime import UTC, datetime
from typing import Any

import httpx

from vimha.agent.status import StatusBoard
from vimha.domain.supervision import (
    ActionKind,
    ServiceState,
    ServiceStatus,
    decide,
)
from vimha.drivers.http1 import Http1Client
from vimha.drivers.tls import client_tls
from vimha.servicespec import ServiceConfig

log = logging.getLogger("vimha.agent.services")
FAILED_CAUSE = "service failed its health check"
GAVE_UP_CAUSE = "service failed beyond its restart budget"
PR_SET_PDEATHSIG = 1
EARLIER_ALARMS = (("SERVICE_GAVE_UP", GAVE_UP_CAUSE), ("SERVICE_FAILED", FAILED_CAUSE))


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of a process (R, S, D, T, Z ...), None if gone."""
    try:  # a plain read: asked several times a second per member (pathlib cost a third more)
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return chr(stat[stat.rindex(b")") + 2])
    except (OSError, ValueError, IndexError):
        return None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started in a session of its own, with what it started (SIGKILL
    works on a stopped process too). Only while it is not reaped: once reaped, its pid (and
    so its group's id) may already be another process's, another member's say, on a busy
    machine whose pids wrap around (at 32,768 on the test machines)."""
    if proc.returncode is not None:
        return  # reaped: nothing of it to kill by that number any more
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # not reaped yet (maybe a zombie): still its id


def die_with_agent() -> None:
    """In a child before exec: SIGKILL when the agent (its parent) dies. Members of service
    groups use it, so that no member outlives the agent holding its role: a restarted agent
    starts its members again, as standbys."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def ordinary_priority() -> None:
    """In a child before exec: back to the ordinary scheduling priority. The agent takes a
    higher one so that it keeps heartbeating under load; the servers it starts must not
    inherit it, or a busy database starves the agent it runs under."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)


def service_child(die: bool) -> None:
    ordinary_priority()
    if die:
        die_with_agent()


class SupervisedProcess:
    def __init__(self, cfg: ServiceConfig, die_with_agent: bool = False) -> None:
        self.cfg = cfg
        self.die_with_agent = die_with_agent
        self.proc: subprocess.Popen[bytes] | None = None
        self._http = Http1Client(cfg.timeout)

    def start(self) -> None:
        # The service ends with the agent when it opts in (the embedded cloud's demo services
        # do); on a real node services are units of their own and outlive an agent restart.
        env = {**os.environ, "VIMHA_EXIT_WITH_PARENT": "1"}
        self.proc = subprocess.Popen(
            list(self.cfg.command),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            preexec_fn=lambda: service_child(self.die_with_agent),
        )

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        kill_group(proc)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    def _process_problem(self) -> str | None:
        """What is wrong with the process itself (gone, zombie, stopped), None if it runs."""
        proc = self.proc
        if proc is None:
            return "not started"
        proc.poll()  # reap it if it exited, so that it does not linger as a zombie
        state = process_state(proc.pid) if proc.returncode is None else None
        if state is None:
            return f"process exited ({proc.returncode})"
        if state in ("Z", "X"):
            return "process is a zombie"
        if state in ("T", "t"):
            return "process is stopped (SIGSTOP)"
        return None

    async def check(self, running: bool = False) -> tuple[bool, str]:
        """The process, then its probe. `running`: the caller has just seen it run."""
        if not running and (problem := self._process_problem()) is not None:
            return False, problem
        ok, detail = await self._probe()
        if not ok and (problem := self._process_problem()) is not None:
            return False, problem  # stopped or gone while it was probed: that is the news
        return ok, detail

    async def _probe(self) -> tuple[bool, str]:
        if self.cfg.check == "tcp" and self.cfg.target:
            host, _, port = self.cfg.target.rpartition(":")
            try:
                async with asyncio.timeout(self.cfg.timeout):
                    _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
            except (OSError, TimeoutError) as exc:
                return False, f"tcp {self.cfg.target}: {type(exc).__name__}"
        if self.cfg.check == "http" and self.cfg.target:
            from vimha.domain.errors import DeliveryFailed

            try:
                response = await self._http.request("GET", self.cfg.target, {}, b"")
            except DeliveryFailed as exc:
                return False, f"http {self.cfg.target}: {exc.detail}"
            if not 200 <= response.status < 300:
                return False, f"http {self.cfg.target}: answered {response.status}"
        if self.cfg.check == "command" and self.cfg.check_command:
            return await self._run_check()
        return True, "ok"

    async def _run_check(self) -> tuple[bool, str]:
        argv = self.cfg.check_command
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        except OSError as exc:
            return False, f"check {argv[0]}: {exc.strerror}"
        try:
            async with asyncio.timeout(self.cfg.timeout):
                _, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return False, f"check {argv[0]}: timed out after {self.cfg.timeout:g}s"
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip()[-120:]
            return False, f"check {argv[0]} exited {proc.returncode}" + (
                f": {tail}" if tail else ""
            )
        return True, "ok"


class Reporter:
    """Native fault events to the controller, in order, retried until accepted."""

    def __init__(self, url: str | None, token: str | None) -> None:
        self.url = url.rstrip("/") if url else None
        self.token = token
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def report(self, event: dict[str, Any]) -> None:
        if self.url is not None:
            self.queue.put_nowait(event)

    async def run(self) -> None:
        if self.url is None:
            return
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=5, verify=client_tls()
        ) as client:
            while True:
                event = await self.queue.get()
                delay = 0.1
                while True:
                    try:
                        r = await client.post("/vim/v1/events", json=event)
                        if r.status_code < 500:
                            if r.status_code >= 400:
                                log.error("controller refused an event: %s", r.text[:200])
                            break
                    except httpx.HTTPError as exc:
                        log.warning("controller unreachable (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(5.0, delay * 2)


async def supervise(
    node: str,
    cfg: ServiceConfig,
    reporter: Reporter,
    stop: asyncio.Event,
    board: StatusBoard | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    policy = cfg.restart.policy()
    proc = SupervisedProcess(cfg)
    proc.start()
    state = ServiceState(cfg.name, started_at=loop.time())
    obj = f"{node}/{cfg.name}"
    total_restarts = 0
    ran = False
    try:
        while not stop.is_set():
            ok, detail = await proc.check()
            state, actions = decide(state, ok, detail, loop.time(), policy)
            if state.status is ServiceStatus.RUNNING and not ran:
                ran = True  # what an earlier run of this agent left raised is over
                for fault, cause in (
                    ("SERVICE_GAVE_UP", GAVE_UP_CAUSE),
                    ("SERVICE_FAILED", FAILED_CAUSE),
                ):
                    reporter.report(service_event(obj, fault, cause, "CLEARED", f"{cfg.name} runs"))
            total_restarts += sum(a.kind is ActionKind.RESTART for a in actions)
            if board is not None:
                board.update(cfg.name, _status(cfg, state, ok, detail, total_restarts))
            for action in actions:
                log.info("%s: %s", obj, action.reason)
                if action.kind is ActionKind.RESTART:
                    proc.kill()
                    proc.start()
                elif action.kind is ActionKind.RAISE_RESTART_ALARM:
                    reporter.report(
                        service_event(obj, "SERVICE_FAILED", FAILED_CAUSE, "MAJOR", action.reason)
                    )
                elif action.kind is ActionKind.CLEAR_RESTART_ALARM:
                    reporter.report(
                        service_event(obj, "SERVICE_FAILED", FAILED_CAUSE, "CLEARED", action.reason)
                    )
                elif action.kind is ActionKind.RAISE_GAVE_UP_ALARM:
                    reporter.report(
                        service_event(
                            obj, "SERVICE_GAVE_UP", GAVE_UP_CAUSE, "CRITICAL", action.reason
                        )
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cfg.interval):
                    await stop.wait()
    finally:
        proc.kill()


def _status(
    cfg: ServiceConfig, state: ServiceState, ok: bool, detail: str, total: int
) -> dict[str, Any]:
    return {
        "name": cfg.name,
        "kind": cfg.kind,
        "check": cfg.check,
        "status": state.status.value,
        "lastCheckOk": ok,
        "lastCheckDetail": detail,
        "lastFailure": state.last_failure,
        "restarts": state.restart_count,
        "totalRestarts": total,
        "lastCheckAt": datetime.now(UTC).isoformat(),
    }


def service_event(obj: str, fault: str, cause: str, severity: str, reason: str) -> dict[str, Any]:
    node = obj.split("/")[0]
    return {
        "managedObjectId": obj,
        "faultType": fault,
        "probableCause": cause,
        "perceivedSeverity": severity,
        "eventType": "PROCESSING_ERROR_ALARM",
        "vimLevelResourceType": "service",
        "faultDetails": [reason],
        "location": {"host": node},
    }
