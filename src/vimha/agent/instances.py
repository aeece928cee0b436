"""The node's instances (issue 14): the controller decides, the agent runs.

- Watch: a long poll of what the host should run (`GET .../instances/desired` with the
  generation the agent has): it answers at once when the generation moves, so a new
  instance starts within a round trip of its creation, not at the next poll.
- Reconcile: guests to spawn (fetching their image into a cache, verified by its digest),
  power changes asked for since the agent last applied them (start, stop, pause, unpause),
  reboots by number, deletions. A guest that crashed is not restarted here: the controller
  decides (its recovery policy), and says so through the desired state.
- Report: every guest and what happened to it, at once on a change or an event (a guest
  that died), and every `report_every` seconds; the answer names guests to destroy (moved,
  deleted, an older incarnation) or unknown to every controller (alarmed there; kept).
- What was applied (power, reboot numbers) is kept on disk, so an agent restarted neither
  reboots a guest again nor misses a change; the hypervisor driver adopts the guests.
- Migrations (issue 19): a guest leaving or arriving is the migration runner's
  (`agent/migrations.py`), not reconciled here until it has landed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from vimha.agent.migrations import MigrationRunner
from vimha.domain.errors import VimhaError
from vimha.drivers import guest_netns
from vimha.ports.hypervisor import (
    GuestEvent,
    GuestEventKind,
    GuestNetworks,
    GuestPort,
    GuestSpec,
    GuestState,
    GuestWatchdog,
    Hypervisor,
    WatchdogAction,
)

log = logging.getLogger("vimha.agent.instances")
RETRY = 0.5
UNCHANGED_PAUSE = 0.1  # before asking again after an answer that brought no new generation
SPAWN_PARALLEL = 16


def guest_spec(doc: dict[str, Any], image_path: Path, bridges: dict[str, str]) -> GuestSpec:
    """The driver's spec of an instance the controller wants here; each port on the node's
    bridge for its network (`bridges`: network name -> bridge, "*" for any other network)."""
    wd = doc.get("watchdog")
    image = doc["image"]
    fmt = image["properties"].get("vimha_format") or image["diskFormat"]
    return GuestSpec(
        instance_id=doc["id"],
        name=doc["name"],
        incarnation=int(doc["incarnation"]),
        vcpus=int(doc["vcpus"]),
        ram_mib=int(doc["ramMib"]),
        disk_gib=int(doc["diskGib"]),
        image_id=image["id"],
        image_path=str(image_path),
        image_format=fmt,
        ports=tuple(
            GuestPort(
                p["network"],
                p["mac"],
                p["ip"],
                int(p["prefix"]),
                p.get("gateway"),
                tuple(p.get("tags", ())),
                bridges.get(p["network"], bridges.get("*")),
            )
            for p in doc["ports"]
        ),
        config_drive={k: base64.b64decode(v) for k, v in doc["configDrive"].items()},
        watchdog=None
        if wd is None
        else GuestWatchdog(float(wd["timeout"]), WatchdogAction(wd["action"])),
        vnf=doc.get("vnf", ""),
        metadata=doc.get("metadata", {}),
    )


class InstanceManager:
    def __init__(
        self,
        node: str,
        url: str,
        token: str,
        hypervisor: Hypervisor,
        state_dir: Path,
        report_every: float = 5.0,
        bridges: dict[str, str] | None = None,
        console: str | None = None,
        verify: Any = True,
    ) -> None:
        self.node = node
        self.url = url.rstrip("/")
        self.token = token
        self.hv = hypervisor
        self.state_dir = state_dir
        self.images = state_dir / "images"
        self.images.mkdir(parents=True, exist_ok=True)
        self.report_every = report_every
        self.bridges = bridges or {}
        self.console = console
        self.verify = verify
        self.generation = -1
        self.desired: dict[str, dict[str, Any]] = {}
        self.applied: dict[str, dict[str, Any]] = self._load_applied()
        self.events: list[GuestEvent] = []
        self.changed = asyncio.Event()  # report now
        self.wanted = asyncio.Event()  # reconcile now
        self.ready = asyncio.Event()  # a first desired state is known
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._busy: set[str] = set()  # guests being spawned or changed
        self.incoming: dict[str, dict[str, Any]] = {}  # guests arriving by a migration
        self.migrations = MigrationRunner(
            node, hypervisor, state_dir, self._client, self._spec_of, self.changed,
            self._stopped_here,
        )  # fmt: skip

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
            verify=self.verify,
        )

    async def _spec_of(self, doc: dict[str, Any]) -> GuestSpec:
        image = await self._image(doc["image"])
        return guest_spec(doc, image, self.bridges)

    def _stopped_here(self, instance_id: str) -> None:
        """A cold migration stopped the guest: started again if the controller says so."""
        entry = self.applied.get(instance_id)
        if entry is not None:
            entry["power"] = "stopped"
            self._save_applied()

    # -- applied state, kept across agent restarts --------------------------------------
    def _applied_file(self) -> Path:
        return self.state_dir / "applied.json"

    def _load_applied(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._applied_file().read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save_applied(self) -> None:
        tmp = self._applied_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(self.applied))
        os.replace(tmp, self._applied_file())

    # -- the loops ----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=10, verify=self.verify
        ) as client:
            await self.hv.list_guests()  # adopt what an earlier agent started
            tasks = [
                asyncio.create_task(self._watch(client, stop)),
                asyncio.create_task(self._reconciler(stop)),
                asyncio.create_task(self._reporter(client, stop)),
                asyncio.create_task(self._hv_events(stop)),
                asyncio.create_task(self._probes(stop)),
            ]
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.hv.close()

    async def _watch(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        path = f"/vim/v1/hosts/{self.node}/instances/desired"
        said = ""
        while not stop.is_set():
            params = {"generation": self.generation, "wait": 25 if self.ready.is_set() else 0}
            try:
                r = await client.get(path, params=params, timeout=40)
                r.raise_for_status()
                doc = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                if str(exc) != said:
                    log.warning("desired instances not fetched (%s); asking again", exc)
                    said = str(exc)
                await asyncio.sleep(RETRY)
                continue
            said = ""
            generation = int(doc["generation"])
            if generation != self.generation or not self.ready.is_set():
                self.generation = generation
                self.desired = {i["id"]: i for i in doc["instances"]}
                self.incoming = {i["id"]: i for i in doc.get("incoming", ())}
                self.migrations.step(self.desired, self.incoming)
                self.ready.set()
                self.wanted.set()
            else:  # an answer without news (the wait ended, or was cut short): never spin
                await asyncio.sleep(UNCHANGED_PAUSE)

    async def _reconciler(self, stop: asyncio.Event) -> None:
        await self.ready.wait()
        while not stop.is_set():
            await self.wanted.wait()
            self.wanted.clear()
            self.migrations.step(self.desired, self.incoming)
            try:
                await self.reconcile()
            except VimhaError as exc:
                log.error("reconcile: %s", exc.detail)
            except Exception:
                log.exception("reconcile failed")
            self.changed.set()

    async def _hv_events(self, stop: asyncio.Event) -> None:
        async for event in self.hv.events():
            log.info("guest %s: %s %s", event.instance_id, event.kind.value, event.detail)
            self.events.append(event)
            self.changed.set()

    async def _probes(self, stop: asyncio.Event, tick: float = 0.1) -> None:
        """Each guest whose VDU declares a health check is probed on its first port (from
        inside its network namespace, when it has one); one that stops answering for
        `failures` probes in a row is reported HUNG (once, until it answers again or is
        restarted). Probing starts at its first answer, so a guest still booting is never
        called hung."""
        state: dict[
            tuple[str, int, int], list[float]
        ] = {}  # (id, inc, reboot) -> [next, failed, armed, told]
        loop = asyncio.get_running_loop()
        netns = self.hv.guest_netns if isinstance(self.hv, GuestNetworks) else None
        while not stop.is_set():
            await asyncio.sleep(tick)
            now = loop.time()
            live = set()
            for doc in list(self.desired.values()):
                check = doc.get("healthCheck")
                if not check or doc["power"] != "running" or not doc["ports"]:
                    continue
                if doc.get("migration"):
                    continue  # a migration interrupts it on purpose (and measures it)
                key = (doc["id"], int(doc["incarnation"]), int(doc["reboot"]["seq"]))
                live.add(key)
                st = state.setdefault(key, [now, 0, 0, 0])
                if now < st[0]:
                    continue
                st[0] = now + float(check["interval"])
                where = netns(doc["id"]) if netns is not None else None
                ok = await _probe(doc["ports"][0]["ip"], check, where)
                if ok:
                    st[1], st[2], st[3] = 0, 1, 0
                    continue
                if not st[2]:
                    continue  # not armed: still booting
                st[1] += 1
                if st[1] >= int(check["failures"]) and not st[3]:
                    st[3] = 1
                    detail = f"{int(st[1])} health checks failed ({check['kind']})"
                    log.warning("guest %s hung: %s", doc["name"], detail)
                    self.events.append(
                        GuestEvent(key[0], key[1], GuestEventKind.HUNG, datetime.now(UTC), detail)
                    )
                    self.changed.set()
            for key in set(state) - live:
                del state[key]

    async def _reporter(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        path = f"/vim/v1/hosts/{self.node}/instances/observed"
        wait = 0.0
        said = ""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), wait)
            self.changed.clear()
            events, self.events = self.events, []
            sent = self.migrations.take()
            body = await self._report(events)
            body["migrations"] = sent
            try:
                r = await client.put(path, json=body)
                r.raise_for_status()
                verdict = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                self.events = events + self.events  # sent again with the next report
                if str(exc) != said:
                    log.warning("report not taken (%s); sent again soon", exc)
                    said = str(exc)
                wait = RETRY
                continue
            said = ""
            wait = self.report_every
            self.migrations.sent(sent)
            for instance_id in verdict.get("destroy", ()):
                if instance_id in self.desired and self._wanted_here(instance_id):
                    continue  # the controller's answer predates what we were told since
                if instance_id in self.incoming:
                    continue  # arriving here by a migration
                log.warning(
                    "destroying guest %s (the controller does not want it here)", instance_id
                )
                await self.hv.destroy(instance_id)
                self.applied.pop(instance_id, None)
                self.changed.set()
            for instance_id in verdict.get("unknown", ()):
                log.warning("guest %s is unknown to the controller: left running", instance_id)

    def _wanted_here(self, instance_id: str) -> bool:
        doc = self.desired.get(instance_id)
        return doc is not None and doc["power"] != "deleted"

    async def _report(self, events: list[GuestEvent]) -> dict[str, Any]:
        guests = []
        for g in await self.hv.list_guests():
            applied = self.applied.get(g.instance_id, {})
            guests.append(
                {
                    "id": g.instance_id,
                    "incarnation": g.incarnation,
                    "state": g.state.value,
                    "rebooted": int(applied.get("rebooted", 0)),
                    "detail": g.detail,
                }
            )
        res = await self.hv.resources()
        body: dict[str, Any] = {
            "guests": guests,
            "events": [
                {
                    "id": e.instance_id,
                    "incarnation": e.incarnation,
                    "kind": e.kind.value,
                    "detail": e.detail,
                }
                for e in events
            ],
            "resources": {
                "vcpus": res.vcpus,
                "ramMib": res.ram_mib,
                "diskGib": res.disk_gib,
                "traits": list(res.traits),
                "hypervisor": self.hv.name,
                "migration": {
                    "live": self.hv.capabilities.live_migration,
                    "note": self.hv.capabilities.live_note,
                },
            },
        }
        if self.console:
            body["console"] = self.console
        return body

    # -- reconciliation -----------------------------------------------------------------
    async def reconcile(self) -> None:
        guests = {g.instance_id: g for g in await self.hv.list_guests()}
        spawns = []
        for instance_id, doc in list(self.desired.items()):
            if instance_id in self._busy:
                continue
            if doc.get("migration") and doc["power"] != "deleted":
                continue  # leaving by a migration: the runner's, until it ended
            guest = guests.get(instance_id)
            if doc["power"] == "deleted":
                if guest is not None:
                    await self.hv.destroy(instance_id)
                self.applied.pop(instance_id, None)
                continue
            if guest is None or guest.incarnation < int(doc["incarnation"]):
                spawns.append(doc)
                continue
            await self._converge(doc, guest.state)
        if spawns:
            limit = asyncio.Semaphore(SPAWN_PARALLEL)
            await asyncio.gather(*(self._spawn(doc, limit) for doc in spawns))
        self._save_applied()

    async def _spawn(self, doc: dict[str, Any], limit: asyncio.Semaphore) -> None:
        instance_id = doc["id"]
        self._busy.add(instance_id)
        try:
            async with limit:
                image = await self._image(doc["image"])
                spec = guest_spec(doc, image, self.bridges)
                await self.hv.spawn(spec)
            self.applied[instance_id] = {
                "incarnation": spec.incarnation,
                "power": "running",
                "rebooted": int(doc["reboot"]["seq"]),
            }
            log.info(
                "guest %s (%s) spawned, incarnation %d", doc["name"], instance_id, spec.incarnation
            )
            if doc["power"] != "running":
                await self._converge(doc, GuestState.RUNNING)
        except (VimhaError, httpx.HTTPError, OSError) as exc:
            log.error("guest %s not spawned (tried again soon): %s", doc["name"], exc)
            asyncio.get_running_loop().call_later(1.0, self.wanted.set)
        finally:
            self._busy.discard(instance_id)

    async def _converge(self, doc: dict[str, Any], state: GuestState) -> None:
        """Apply what was asked since the agent last applied it (by power and number)."""
        instance_id = doc["id"]
        applied = self.applied.setdefault(
            instance_id,
            {
                "incarnation": doc["incarnation"],
                "power": doc["power"],
                "rebooted": int(doc["reboot"]["seq"]),
            },
        )
        seq = int(doc["reboot"]["seq"])
        if seq > int(applied.get("rebooted", 0)):
            if state is GuestState.SHUTOFF or state is GuestState.CRASHED:
                await self.hv.power_on(instance_id)
            else:
                await self.hv.reboot(instance_id, bool(doc["reboot"]["hard"]))
            applied["rebooted"] = seq
            applied["power"] = "running"
            return
        want = doc["power"]
        if want == applied.get("power"):
            return
        if want == "running":
            if state is GuestState.PAUSED:
                await self.hv.unpause(instance_id)
            else:
                await self.hv.power_on(instance_id)
        elif want == "stopped":
            await self.hv.power_off(instance_id, graceful=True)
        elif want == "paused":
            await self.hv.pause(instance_id)
        applied["power"] = want

    async def _image(self, image: dict[str, Any]) -> Path:
        """The image's file in the cache, fetched once and checked against its digest."""
        digest = str(image["digest"])
        path = self.images / digest
        if path.exists():
            return path
        lock = self._image_locks.setdefault(digest, asyncio.Lock())
        async with lock:
            if path.exists():
                return path
            tmp = path.with_suffix(".part")
            sha = hashlib.sha256()
            headers = {"Authorization": f"Bearer {self.token}"}
            async with (
                httpx.AsyncClient(
                    base_url=self.url, headers=headers, timeout=60, verify=self.verify
                ) as client,
                client.stream("GET", f"/vim/v1/images/{image['id']}/file") as r,
            ):
                if r.status_code != 200:
                    raise ImageUnavailable(f"image {image['id']}: {r.status_code}")
                with open(tmp, "wb") as fh:  # noqa: ASYNC230 - a local cache file
                    async for piece in r.aiter_bytes(1 << 20):
                        sha.update(piece)
                        fh.write(piece)
            if sha.hexdigest() != digest:
                tmp.unlink(missing_ok=True)
                raise ImageUnavailable(f"image {image['id']}: digest mismatch")
            os.replace(tmp, path)
            return path


async def _probe(ip: str, check: dict[str, Any], netns: str | None = None) -> bool:
    """One health check: a TCP connection, or an HTTP answer below 500; from inside the
    guest's network namespace when it has one (its address is not the node's)."""
    limit = float(check["timeout"])
    port = int(check["port"])
    try:
        if check["kind"] == "tcp":
            async with asyncio.timeout(limit):
                _, writer = await guest_netns.open_connection(ip, port, netns)
            writer.close()
            return True
        path = check.get("path", "/")
        status, _ = await guest_netns.http_request("GET", ip, port, path, netns, limit)
        return status < 500
    except (OSError, TimeoutError):
        return False


class ImageUnavailable(VimhaError):
    """The image could not be fetched or did not match its digest."""
