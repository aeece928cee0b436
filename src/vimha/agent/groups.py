"""A node's member of a service group (issue 4): it monitors its member through the handler,
publishes itself in the coordination backend, and takes, holds or gives up an active slot as
`domain/groups.py` decides. Keys, under /vimha/<vim>/groups/<group>/:

    spec                the group as declared (every member writes the same)
    members/<node>      this member: health, role, position, pid (on the member's lease)
    slots/<i>           the active of slot i (on the holder's lease)
    holder/<i>          the last holder of slot i, with its epoch (kept)
    released/<i>        the last holder demoted itself and released slot i (kept)
    epoch               the fencing-token counter
and /vimha/<vim>/fenced/<host>, written by a controller once it has fenced a host.

Fast path: a member whose monitor fails resigns at once (stop, release, delete the slot), and
a standby takes the slot on the next watch event. A holder that cannot renew its lease for
`demote_after` demotes itself before the lease can lapse; a lapsed lease alone never lets a
standby in (the old active may be frozen, not dead): a release or a fencing must come first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from vimha.agent.handlers import Handler, HandlerFailed, Health
from vimha.agent.registry import make_handler
from vimha.domain.errors import Temporary
from vimha.domain.groups import Act, Decision, MemberView, Vacancy, decide_member, unmeasured
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.groupspec import GroupConfig, fenced_prefix, groups_prefix, peer_from
from vimha.ports.coordination import Coordination, LeaseLost, PermissionDenied

log = logging.getLogger("vimha.agent.groups")
START_GRACE = 3.0  # a member just (re)started is not restarted again for failing checks
# monitor rounds a free slot waits for a silent candidate's fresh position (`_settled`)
SETTLE_ROUNDS = 5


def group_mirror(coord: Coordination, vim: str) -> Mirror:
    """What the members of an agent's groups watch: every group, and the fenced hosts."""
    return Mirror(coord, (groups_prefix(vim), fenced_prefix(vim)))


class GroupMember:
    def __init__(
        self,
        node: str,
        vim: str,
        cfg: GroupConfig,
        coord: Coordination,
        run_dir: Path,
        handler: Handler | None = None,
        mirror: Mirror | None = None,
    ) -> None:
        self.node = node
        self.cfg = cfg
        self.coord = coord
        self.policy = cfg.group_policy()
        self.lease_policy = cfg.lease.policy()
        self.prefix = f"{groups_prefix(vim)}{cfg.name}/"
        self.fenced = fenced_prefix(vim)
        # one watch for all the groups of the agent (and its balancer), when it gives one
        self.mirror = mirror or group_mirror(coord, vim)
        self.changed = self.mirror.subscribe()
        self.common = f"/vimha/{vim}/"
        self.handler = handler or make_handler(cfg, node, run_dir, coord, vim, self.mirror)
        self.lease = 0
        self.renewed_at = 0.0
        self.holding: int | None = None
        self.epoch = 0
        self.following: str | None = "?"
        self._follow_error = ""
        self._start_error = ""  # why the last start failed ("" when it started)
        self._start_said = ""
        self.health = Health(False, "starting")
        self.failed_checks = 0  # failed checks of a running member, in a row
        self.failing_since = 0.0  # when the first of them failed
        self.started_at = 0.0
        self.last_decision: Decision | None = None
        self.published: dict[str, Any] = {}
        self.vacant_since: dict[int, float] = {}
        self.seen: frozenset[str] = frozenset()  # vacancies seen before the last monitor
        self.safe_since: dict[str, float] = {}  # vacancy key -> when first seen safe to take
        # the last position measured: published while a check cannot measure one, for the
        # others to know what this member has (the commits only it acknowledged)
        self.known_position = -1
        self.unsettled_said = ""
        self.role = "standby"
        self.unreleased: tuple[int, str] | None = None  # a release not yet written
        self.taken = ""  # the value of the slot key this member holds

    # --- the lease -------------------------------------------------------------------------

    async def _keep_lease(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                if self.lease == 0:
                    self.lease = await self.coord.grant(self.lease_policy.ttl)
                    self.published = {}  # write everything again on the new lease
                else:
                    await self.coord.keepalive(self.lease)
                self.renewed_at = time.monotonic()
            except LeaseLost:
                log.warning("%s: lease lost", self.cfg.name)
                self.lease = 0
                self.changed.set()
                continue
            except Temporary as exc:
                log.warning("%s: lease not renewed (%s)", self.cfg.name, exc)
                self.changed.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.lease_policy.renew):
                    await stop.wait()

    def _trusted(self) -> bool:
        return (
            self.lease != 0 and time.monotonic() - self.renewed_at < self.lease_policy.demote_after
        )

    # --- the view --------------------------------------------------------------------------

    def _view(self) -> MemberView:
        keys = self.mirror.keys
        peers = []
        for key, entry in keys.items():
            if key.startswith(self.prefix + "members/") and not key.endswith("/" + self.node):
                peers.append(peer_from(load_json(entry)))
        vacancies = []
        for slot in range(self.policy.slots):
            if self.prefix + f"slots/{slot}" in keys:
                continue
            holder_entry = keys.get(self.prefix + f"holder/{slot}")
            holder = load_json(holder_entry)
            released = load_json(keys.get(self.prefix + f"released/{slot}"))
            fence = keys.get(self.fenced + str(holder.get("host", "")))
            vacancies.append(
                Vacancy(
                    slot,
                    holder.get("member"),
                    holder.get("host"),
                    bool(holder) and released.get("epoch") == holder.get("epoch"),
                    fence is not None
                    and holder_entry is not None
                    and fence.revision > holder_entry.revision,
                    int(released.get("position", -1)) if released else -1,
                    int(holder.get("epoch") or 0),
                )
            )
        now = time.monotonic()
        safe = {k for v in vacancies if (k := v.key) is not None}
        self.safe_since = {k: self.safe_since.get(k, now) for k in safe}
        vacant_for = now - min(self.safe_since.values()) if self.safe_since else 0.0
        return MemberView(
            self.node,
            self.health.healthy,
            self.health.position,
            self.holding,
            tuple(peers),
            tuple(vacancies),
            self.seen,
            vacant_for,
        )

    def _active_address(self) -> str | None:
        doc = load_json(self.mirror.keys.get(self.prefix + "slots/0"))
        address = doc.get("address")
        return str(address) if address and doc.get("member") != self.node else None

    # --- acting ----------------------------------------------------------------------------

    async def _take(self, slot: int, decision: Decision) -> None:
        if not self._trusted():
            return
        epoch = await self.coord.increment(self.prefix + "epoch")
        reason = decision.reason
        doc: dict[str, Any] = {
            "member": self.node,
            "host": self.node,
            "address": self.cfg.address,
            "epoch": epoch,
            "t": time.time(),
            "reason": reason,
        }
        if decision.passed_over:  # the controllers raise SERVICE_GROUP_DATA_AT_RISK
            doc["position"] = self.health.position
            doc["passedOver"] = [{"member": m, "position": p} for m, p in decision.passed_over]
        value = json.dumps(doc)
        if not await self.coord.create(self.prefix + f"slots/{slot}", value, self.lease):
            return
        # held from here on: if what follows is interrupted, the next step finishes it (HOLD)
        self.holding, self.epoch, self.role, self.taken = slot, epoch, "promoting", value
        await self._promote(reason)

    async def _promote(self, reason: str) -> None:
        """Record the holding (the standbys' safety rests on it), then promote the member."""
        slot = self.holding
        assert slot is not None
        await self.coord.put(self.prefix + f"holder/{slot}", self.taken)
        try:
            await self.handler.promote(self.epoch)
        except HandlerFailed as exc:
            log.error("%s: promotion failed (%s): resigning", self.cfg.name, exc)
            await self._resign(slot, f"promotion failed: {exc}")
            return
        self.role = "active"
        self.following = None
        log.warning("%s: active in slot %d (epoch %d): %s", self.cfg.name, slot, self.epoch, reason)

    async def _resign(self, slot: int, reason: str) -> None:
        """Stop serving first (hard: the member may be hung), then say so, then free the slot."""
        await self.handler.stop()
        self.started_at = 0.0  # restart it as a standby at once
        self.holding, self.role, self.following = None, "standby", "?"
        released = json.dumps(
            {
                "member": self.node,
                "host": self.node,
                "epoch": self.epoch,
                "position": self.health.position,
                "t": time.time(),
                "reason": reason,
            }
        )
        try:
            await self.coord.put(self.prefix + f"released/{slot}", released)
            entry = self.mirror.keys.get(self.prefix + f"slots/{slot}")
            if entry is not None and load_json(entry).get("epoch") == self.epoch:
                await self.coord.delete(self.prefix + f"slots/{slot}")
        except Temporary:  # cut off: said as soon as the backend answers again
            self.unreleased = (slot, released)
        log.warning("%s: %s resigned slot %d: %s", self.cfg.name, self.node, slot, reason)

    async def _say_released(self) -> None:
        """A release that could not be written (the member was cut off when it demoted): the
        standbys wait for it (or for a fencing), so it is written once the backend answers,
        unless another holder took the slot meanwhile."""
        if self.unreleased is None:
            return
        slot, released = self.unreleased
        holder = load_json(await self.coord.get(self.prefix + f"holder/{slot}"))
        if (
            holder.get("member") == self.node
            and holder.get("epoch") == json.loads(released)["epoch"]
        ):
            await self.coord.put(self.prefix + f"released/{slot}", released)
            log.warning(
                "%s: release of slot %d written after the backend came back", self.cfg.name, slot
            )
        self.unreleased = None

    async def _restart_if_due(self) -> None:
        now = time.monotonic()
        # a server still starting is left to start (`start_grace`), unless it is gone
        starting = 0.0 if self.health.definite else self.cfg.start_grace
        if self.started_at and now - self.started_at < max(
            START_GRACE, self.cfg.restart_backoff, starting
        ):
            return
        # a start that waits (for an active to clone, the others' positions, the member
        # forming a cluster) is tried again every few seconds: said once, not at every try
        said = f"{self.health.detail}|{self._start_error}"
        if self.started_at and said != self._start_said:
            log.warning("%s: member unhealthy (%s): restarting", self.cfg.name, self.health.detail)
        self._start_said = said
        await self.handler.stop()
        self.started_at = now
        self.following = "?"
        try:
            await self.handler.start()
            self._start_error = ""
        except HandlerFailed as exc:
            if str(exc) != self._start_error:
                log.error("%s: could not start the member: %s", self.cfg.name, exc)
            self._start_error = str(exc)

    def _judged(self, health: Health) -> Health:
        """A failed check of a running member counts once `monitor_failures` failed in a
        row, for `monitor_grace` seconds at least, and not before the member has had
        `start_grace` seconds to start; until then the member keeps the health it had (one
        slow answer is not a failure, nor a server still starting on a loaded box). A process
        gone or stopped, or a member recovering, counts at once."""
        if health.healthy or health.definite or health.recovering:
            self.failed_checks = 0
            return health
        now = time.monotonic()
        if self.failed_checks == 0:
            self.failing_since = now
        self.failed_checks += 1
        lasted = now - self.failing_since
        starting = bool(self.started_at) and now - self.started_at < self.cfg.start_grace
        if not self.health.healthy or (
            self.failed_checks >= self.cfg.monitor_failures
            and lasted >= self.cfg.monitor_grace
            and not starting
        ):
            return health
        if starting and self.failed_checks == self.cfg.monitor_failures:
            log.info(
                "%s: still starting, slow answers do not count: %s", self.cfg.name, health.detail
            )
        return self.health

    async def _follow(self) -> None:
        active = self._active_address()
        if active == self.following:
            return
        try:
            await self.handler.demote(active)
            self.following = active
            self.role = "standby"
        except HandlerFailed as exc:
            if str(exc) != self._follow_error:  # said once, not at every step
                log.warning("%s: could not follow %s yet: %s", self.cfg.name, active, exc)
            self._follow_error = str(exc)
        else:
            self._follow_error = ""

    async def _publish(self) -> None:
        doc = {
            "member": self.node,
            "host": self.node,
            "address": self.cfg.address,
            "healthy": self.health.healthy,
            "detail": self.health.detail,
            # unable to measure (the server down, restarting): what it had when last measured
            "position": self.health.position
            if self.health.position >= 0 or self.health.healthy
            else self.known_position,
            "partitioned": self.health.partitioned,
            "empty": self.health.empty,
            "slot": self.holding,
            "epoch": self.epoch if self.holding is not None else None,
            "role": self.role,
            "pid": self.handler.pid,
            "agentPid": os.getpid(),
            "decision": self.last_decision.reason if self.last_decision else "",
            "seen": sorted(self.seen) if self.health.position >= 0 else [],
        }
        if doc == self.published or self.lease == 0:
            return
        value = json.dumps({**doc, "t": time.time()})
        await self.coord.put(self.prefix + f"members/{self.node}", value, self.lease)
        self.published = doc

    def _settled(self, decision: Decision) -> bool:
        """A free slot goes to the freshest standby: when positions rank the candidates, it
        is taken once each of them has published a position measured after it saw the slot
        free (`unmeasured`), or, should one stay silent, after SETTLE_ROUNDS monitor rounds
        (ranked by what it published last)."""
        if decision.slot is None or self.health.position < 0:
            return True
        now = time.monotonic()
        first = self.vacant_since.setdefault(decision.slot, now)
        late = unmeasured(self._view(), decision.slot)
        if not late:
            return True
        if now - first < SETTLE_ROUNDS * self.cfg.monitor_interval:
            return False
        said = f"slot {decision.slot}: {', '.join(late)} published no position since it was free"
        if said != self.unsettled_said:
            log.warning("%s: %s; ranked by their last ones", self.cfg.name, said)
            self.unsettled_said = said
        return True

    async def step(self) -> None:
        # what is free before the check: a position measured now is as of after that
        before = frozenset(k for v in self._view().vacancies if (k := v.key) is not None)
        self.health = self._judged(await self.handler.monitor())
        if self.health.position >= 0:
            self.known_position = self.health.position
        self.seen = before
        await self._say_released()
        if self.holding is not None:
            mine = load_json(self.mirror.keys.get(self.prefix + f"slots/{self.holding}"))
            if not self._trusted() or mine.get("epoch") != self.epoch:
                why = "slot lost" if mine.get("epoch") != self.epoch else "lease not renewed"
                await self._resign(self.holding, f"{why}: demote before anyone takes over")
        decision = decide_member(self._view(), self.policy)
        if decision.reason != (self.last_decision.reason if self.last_decision else ""):
            log.info("%s: %s", self.cfg.name, decision.reason)
        self.last_decision = decision
        held = {
            s for s in range(self.policy.slots) if self.prefix + f"slots/{s}" in self.mirror.keys
        }
        for slot in list(self.vacant_since):
            if slot in held:
                del self.vacant_since[slot]
        if decision.act is Act.RESIGN and decision.slot is not None:
            why = (
                decision.reason
                if self.health.healthy
                else f"{decision.reason} ({self.health.detail})"
            )
            await self._resign(decision.slot, why)
        elif decision.act is Act.TAKE and decision.slot is not None:
            if self._settled(decision):
                await self._take(decision.slot, decision)
        elif decision.act is Act.HOLD and self.role != "active":
            await self._promote("taken, promotion interrupted: finished now")
        elif decision.act is Act.FOLLOW:
            await self._follow()
        elif decision.act is Act.SERVE:
            self.role = "active"
        elif decision.act is Act.WAIT:
            self.role = "down" if not self.health.healthy else "standby"
            if not self.health.healthy and not self.health.recovering:
                await self._restart_if_due()
            elif self.policy.slots:
                await self._follow()
        await self._publish()

    async def _recover_earlier_holding(self) -> None:
        """A restarted agent serves nothing yet: release what an earlier run of it held."""
        for slot in range(self.policy.slots):
            holder = load_json(self.mirror.keys.get(self.prefix + f"holder/{slot}"))
            if holder.get("member") != self.node:
                continue
            released = load_json(self.mirror.keys.get(self.prefix + f"released/{slot}"))
            if released.get("epoch") != holder.get("epoch"):
                self.epoch = int(holder.get("epoch", 0))
                await self.coord.put(
                    self.prefix + f"released/{slot}",
                    json.dumps({**holder, "t": time.time(), "reason": "agent restarted"}),
                )
            current = self.mirror.keys.get(self.prefix + f"slots/{slot}")
            if current is not None and load_json(current).get("member") == self.node:
                await self.coord.delete(self.prefix + f"slots/{slot}", current.revision)

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [asyncio.create_task(self._keep_lease(stop))]
        if not self.mirror.running:  # its own (a shared one is run by whoever made it)
            self.mirror.running = True
            tasks.append(asyncio.create_task(self.mirror.run(stop, self.common)))
        try:
            await self.mirror.ready.wait()
            with contextlib.suppress(Temporary):
                await self.coord.put(self.prefix + "spec", json.dumps(self.cfg.published()))
                await self._recover_earlier_holding()
            await self._restart_if_due()
            while not stop.is_set():
                try:
                    await self.step()
                except Temporary as exc:
                    log.warning("%s: coordination unavailable: %s", self.cfg.name, exc)
                except LeaseLost:
                    self.lease = 0
                self.changed.clear()
                # a timeout, not wait_for: that wraps the wait in a task, ten times a second
                # per group (issue 22: agents running groups used 4-5% of a core)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cfg.monitor_interval):
                        await self.changed.wait()
        except PermissionDenied as exc:  # refused again at every step: not retried
            log.error(
                "%s: %s; this member stops: the etcd user of %s may not write the group's keys",
                self.cfg.name,
                exc.detail,
                self.node,
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.holding is not None:
                with contextlib.suppress(Exception):
                    await self._resign(self.holding, "agent stopping")
            await self.handler.stop()
            if self.lease:
                with contextlib.suppress(Exception):
                    await self.coord.revoke(self.lease)
