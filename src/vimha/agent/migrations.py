"""The node's side of migrations (issue 19): what the controller's desired state says of a
migration, carried out through the hypervisor port, and reported phase by phase.

- Destination (`incoming`): PREPARING -> `prepare_incoming` -> "prepared" (with what the
  source needs); TRANSFERRED (cold) -> the guest's state fetched -> `import_guest` ->
  "started". A migration that disappears before the guest became this node's own is undone
  (`cancel_incoming`).
- Source: READY -> the interruption probe started, its first answer awaited (a few
  seconds at most) -> "running" -> live: `migrate_live` -> "migrated"; cold: `export_guest`
  (the guest stops), its state uploaded (which tells the controller) -> then the probe's
  first answer after -> "measured". A failure is "failed" (with whether the guest was
  stopped here: it is started again when the controller says).

What was done per migration is kept on disk (`migrations.json`): an agent restarted neither
prepares, exports nor migrates twice. Phases wait in an outbox until a report carried them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from vimha.agent.probe import Probe
from vimha.domain.errors import VimhaError
from vimha.domain.migration import longest_gap
from vimha.ports.hypervisor import GuestSpec, Hypervisor

log = logging.getLogger("vimha.agent.migrations")
ANSWER_WITHIN = 60.0  # seconds the probe waits for the guest's first answer after a migration
BEFORE_WITHIN = 3.0  # seconds it waits for one before the migration starts (then goes on)
UPLOAD_TRIES = 5


class MigrationRunner:
    def __init__(
        self,
        node: str,
        hv: Hypervisor,
        state_dir: Path,
        client: Callable[[], httpx.AsyncClient],
        spec_of: Callable[[dict[str, Any]], Awaitable[GuestSpec]],
        changed: asyncio.Event,
        on_stopped: Callable[[str], None],
        probe_interval: float = 0.01,
    ) -> None:
        self.node = node
        self.hv = hv
        self.folder = state_dir / "migrations"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.client = client
        self.spec_of = spec_of
        self.changed = changed
        self.on_stopped = on_stopped  # the guest was stopped here (its applied power)
        self.probe_interval = probe_interval
        self.done: dict[str, list[str]] = self._load()
        self.outbox: list[dict[str, Any]] = []
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.incoming: dict[str, str] = {}  # migration id -> instance id, prepared here

    # -- kept on disk -------------------------------------------------------------------
    def _file(self) -> Path:
        return self.folder / "migrations.json"

    def _load(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self._file().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mark(self, mid: str, what: str) -> None:
        self.done.setdefault(mid, []).append(what)
        tmp = self._file().with_suffix(".tmp")
        tmp.write_text(json.dumps(self.done))
        os.replace(tmp, self._file())

    def _emit(self, mid: str, iid: str, phase: str, **more: Any) -> None:
        self.outbox.append({"id": mid, "instance": iid, "phase": phase, **more})
        self._mark(mid, phase)
        self.changed.set()

    def take(self) -> list[dict[str, Any]]:
        """The phases to report now (kept until `sent`)."""
        return list(self.outbox)

    def sent(self, items: list[dict[str, Any]]) -> None:
        self.outbox = [x for x in self.outbox if x not in items]

    # -- what the desired state says ----------------------------------------------------
    def step(self, own: dict[str, dict[str, Any]], incoming: dict[str, dict[str, Any]]) -> None:
        """Start what the migrations in the desired state ask of this node."""
        live = set()
        for doc in [*own.values(), *incoming.values()]:
            m = doc.get("migration")
            if not m:
                continue
            mid = m["id"]
            live.add(mid)
            if mid in self.tasks and not self.tasks[mid].done():
                continue
            done = self.done.get(mid, [])
            if "failed" in done:
                continue
            if m["role"] == "dest":
                if m["state"] == "PREPARING" and "prepared" not in done:
                    self._run(mid, self._prepare(doc))
                elif m["state"] == "TRANSFERRED" and "started" not in done:
                    self._run(mid, self._import(doc))
            elif m["state"] == "READY" and "running" not in done:
                self._run(mid, self._go(doc))
        for mid, iid in list(self.incoming.items()):
            if mid not in live and iid not in own:
                del self.incoming[mid]  # failed or cancelled before it landed here
                self._run(f"cancel-{mid}", self._cancel(iid))

    def _run(self, key: str, coro: Awaitable[None]) -> None:
        self.tasks[key] = asyncio.ensure_future(coro)

    async def _cancel(self, iid: str) -> None:
        with contextlib.suppress(VimhaError, OSError):
            await self.hv.cancel_incoming(iid)

    # -- destination ----------------------------------------------------------------------
    async def _prepare(self, doc: dict[str, Any]) -> None:
        m, iid = doc["migration"], doc["id"]
        try:
            spec = await self.spec_of(doc)
            target = await self.hv.prepare_incoming(spec, m["kind"] == "live")
        except (VimhaError, OSError, httpx.HTTPError) as exc:
            log.error("migration %s of %s: not prepared: %s", m["id"], doc["name"], exc)
            self._emit(m["id"], iid, "failed", detail=f"not prepared: {_why(exc)}")
            return
        self.incoming[m["id"]] = iid
        log.info("migration %s of %s: prepared here", m["id"], doc["name"])
        self._emit(m["id"], iid, "prepared", target=target)

    async def _import(self, doc: dict[str, Any]) -> None:
        m, iid = doc["migration"], doc["id"]
        path = self.folder / f"{m['id']}.tar"
        try:
            await self._download(m["id"], path, m.get("stateDigest"))
            spec = await self.spec_of(doc)
            await self.hv.import_guest(spec, path)
        except (VimhaError, OSError, httpx.HTTPError) as exc:
            log.error("migration %s of %s: not started here: %s", m["id"], doc["name"], exc)
            self._emit(m["id"], iid, "failed", detail=f"not started here: {_why(exc)}")
            return
        finally:
            path.unlink(missing_ok=True)
        log.info("migration %s of %s: started here", m["id"], doc["name"])
        self._emit(m["id"], iid, "started")

    async def _download(self, mid: str, path: Path, digest: str | None) -> None:
        sha = hashlib.sha256()
        async with (
            self.client() as client,
            client.stream("GET", f"/vim/v1/hosts/{self.node}/migrations/{mid}/state") as r,
        ):
            r.raise_for_status()
            with open(path, "wb") as fh:  # noqa: ASYNC230 - a local file, small
                async for piece in r.aiter_bytes(1 << 20):
                    sha.update(piece)
                    fh.write(piece)
        if digest and sha.hexdigest() != digest:
            raise OSError(f"the guest's state does not match its digest {digest}")

    # -- source ---------------------------------------------------------------------------
    async def _go(self, doc: dict[str, Any]) -> None:
        m, iid = doc["migration"], doc["id"]
        mid = m["id"]
        loop = asyncio.get_running_loop()
        probe = Probe.for_guest(doc, self.probe_interval)
        if probe is not None:
            probe.start()
            # An answer from before the start, whatever it takes: a guest on a loaded node
            # may answer its first probe later than a few intervals, and the interruption
            # could not be measured without it.
            await probe.answer_after(loop.time(), BEFORE_WITHIN)
        started = loop.time()
        self._emit(mid, iid, "running")
        stopped = False
        try:
            if m["kind"] == "live":
                result = await self.hv.migrate_live(
                    iid, dict(m["target"]), m.get("maxDowntimeMs"), float(m.get("limitS", 120))
                )
                self._emit(
                    mid, iid, "migrated", downtimeMs=result.downtime_ms, detail=result.detail
                )
            else:
                path = self.folder / f"{mid}.tar"
                await self.hv.export_guest(iid, path)
                stopped = True
                self.on_stopped(iid)
                try:
                    await self._upload(mid, path)
                finally:
                    path.unlink(missing_ok=True)
                self._mark(mid, "exported")
            ended = loop.time()
        except (VimhaError, OSError, httpx.HTTPError, TimeoutError) as exc:
            log.error("migration %s of %s failed here: %s", mid, doc["name"], exc)
            self._emit(mid, iid, "failed", detail=_why(exc), stopped=stopped)
            if probe is not None:
                await probe.stop()
            return
        await self._measure(mid, iid, probe, started, ended)

    async def _measure(
        self, mid: str, iid: str, probe: Probe | None, started: float, ended: float
    ) -> None:
        if probe is None:
            self._emit(mid, iid, "measured", interruptionMs=None, detail="no address to probe")
            return
        try:
            before = [t for t in probe.answers if t <= started]
            back = await probe.answer_after(ended, ANSWER_WITHIN)
        finally:
            await probe.stop()
        if not before:
            self._emit(
                mid,
                iid,
                "measured",
                interruptionMs=None,
                detail="the guest did not answer before the migration",
            )
        elif back is None:
            self._emit(
                mid,
                iid,
                "measured",
                interruptionMs=None,
                detail=f"no answer within {ANSWER_WITHIN:g} s after it",
            )
        else:
            gap = longest_gap(probe.answers, before[-1], back)
            log.warning("migration %s: the guest was interrupted %.0f ms", mid, gap)
            self._emit(
                mid,
                iid,
                "measured",
                interruptionMs=round(gap, 1),
                detail=f"probe every {probe.interval * 1000:g} ms",
            )

    async def _upload(self, mid: str, path: Path) -> None:
        url = f"/vim/v1/hosts/{self.node}/migrations/{mid}/state"
        data = await asyncio.to_thread(path.read_bytes)
        for attempt in range(UPLOAD_TRIES):
            try:
                async with self.client() as client:
                    r = await client.put(
                        url, content=data, headers={"Content-Type": "application/octet-stream"}
                    )
                r.raise_for_status()
                return
            except httpx.HTTPError:
                if attempt == UPLOAD_TRIES - 1:
                    raise
                await asyncio.sleep(0.2 * (attempt + 1))


def _why(exc: BaseException) -> str:
    return exc.detail if isinstance(exc, VimhaError) else (str(exc) or type(exc).__name__)
