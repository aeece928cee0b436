"""The services an agent supervises: those of its config file, and those declared for its node
through the controller's API, fetched every `sync_interval`. A change of the desired set
starts, restarts (changed declaration) or stops (removed) supervisors; the config file wins a
name that both declare. While the controller cannot be reached, the current set is kept."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import httpx
from pydantic import ValidationError

from vimha.agent.services import EARLIER_ALARMS, Reporter, service_event, supervise
from vimha.agent.status import StatusBoard
from vimha.drivers.tls import client_tls
from vimha.servicespec import ServiceConfig

log = logging.getLogger("vimha.agent.catalog")


class Supervisors:
    def __init__(self, node: str, reporter: Reporter, board: StatusBoard) -> None:
        self.node = node
        self.reporter = reporter
        self.board = board
        self.running: dict[str, tuple[ServiceConfig, asyncio.Event, asyncio.Task[None]]] = {}

    def apply(self, desired: Mapping[str, ServiceConfig]) -> None:
        for name in list(self.running):
            if name not in desired or desired[name] != self.running[name][0]:
                self._stop(name, removed=name not in desired)
        for name, cfg in desired.items():
            if name not in self.running:
                stop = asyncio.Event()
                task = asyncio.create_task(
                    supervise(self.node, cfg, self.reporter, stop, self.board)
                )
                self.running[name] = (cfg, stop, task)
                log.info("supervising %s (%s)", name, cfg.kind)

    def _stop(self, name: str, removed: bool) -> None:
        _, stop, _ = self.running.pop(name)
        stop.set()  # its supervisor kills the process
        if removed:
            log.info("%s is no longer declared: stopped", name)
            obj = f"{self.node}/{name}"
            for fault, cause in EARLIER_ALARMS:
                self.reporter.report(service_event(obj, fault, cause, "CLEARED", f"{name} removed"))
            self.board.remove(name)

    async def close(self) -> None:
        for _, stop, _ in self.running.values():
            stop.set()
        tasks = [task for _, _, task in self.running.values()]
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, BaseException):
                log.error("a watchdog failed: %r", result)


async def sync_declared(
    node: str,
    url: str,
    token: str,
    local: Mapping[str, ServiceConfig],
    supervisors: Supervisors,
    stop: asyncio.Event,
    every: float,
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    path = f"/vim/v1/hosts/{node}/services/declared"
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=5, verify=client_tls()
    ) as client:
        while not stop.is_set():
            declared: dict[str, ServiceConfig] = {}
            try:
                r = await client.get(path)
                r.raise_for_status()
                for spec in r.json():
                    try:
                        cfg = ServiceConfig.model_validate(spec)
                    except ValidationError as exc:
                        log.error("declared service refused: %s", exc.errors()[:1])
                        continue
                    if cfg.name in local:
                        log.warning("%s is in the agent config too: the config wins", cfg.name)
                        continue
                    declared[cfg.name] = cfg
                supervisors.apply({**declared, **local})
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("declared services not fetched (%s); keeping the current ones", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every)
