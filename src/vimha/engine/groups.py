"""The controllers' view of the service groups (issue 4, ARCH-10): everything the members
publish in the coordination backend, watched; each group's alarms decided on every change
(`domain/groups.py`); the timeline of the last switch-over; and, once a host is fenced, its
members' leases revoked and the host marked fenced, so that standbys take over at once
instead of waiting for a lease to lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import replace
from typing import Any

from vimha.domain.alarms import Location
from vimha.domain.clock import Clock
from vimha.domain.errors import Temporary
from vimha.domain.groups import (
    GroupAlarm,
    GroupPolicy,
    OnStale,
    Policy,
    decide_group_alarms,
    passed_over,
)
from vimha.domain.groups import snapshot as group_snapshot
from vimha.drivers.coord_mirror import Mirror, load_json
from vimha.engine.faults import FaultService
from vimha.groupspec import fenced_prefix, groups_prefix, peer_from
from vimha.ports.coordination import Coordination

log = logging.getLogger("vimha.groups")
FORMING = 15.0
FREE_RETRY = 0.2  # s: between tries to free a fenced host's roles in the backend


def _policy(spec: dict[str, Any]) -> GroupPolicy | None:
    try:
        members = len(spec["members"])
        if spec.get("mode") == "cluster":
            return GroupPolicy(Policy.ALL_ACTIVE, members, quorum=True)
        return GroupPolicy(
            Policy(spec["policy"]),
            members,
            int(spec.get("active", 1)),
            spec.get("maxLag"),
            OnStale(spec.get("onStale", "wait")),
        )
    except (KeyError, ValueError, TypeError):
        return None


class GroupWatcher:
    def __init__(
        self, coord: Coordination, vim: str, faults: FaultService, clock: Clock, mine: Any
    ) -> None:
        self.coord = coord
        self.prefix = groups_prefix(vim)
        self.fenced = fenced_prefix(vim)
        self.mirror = Mirror(coord, (self.prefix, self.fenced))
        self.common = f"/vimha/{vim}/"
        self.faults = faults
        self.clock = clock
        self.mine = mine  # () -> bool: this controller raises the alarms (one does)
        self.raised: dict[str, frozenset[GroupAlarm]] = {}
        self.switchovers: dict[str, dict[str, Any]] = {}
        # what a slot taken passing over a fresher member may have lost, until the group is
        # whole again (SERVICE_GROUP_DATA_AT_RISK)
        self.at_risk: dict[str, str] = {}
        self.holders: dict[str, dict[str, Any]] = {}
        self.first_seen: dict[str, float] = {}
        self.formed: set[str] = set()
        # fenced hosts whose roles are not freed yet (the backend failed: an etcd election
        # after the fenced host's member, the leader, went with it), and their marks
        self.unfreed: dict[str, dict[str, Any]] = {}

    # --- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        found = {
            key[len(self.prefix) :].split("/", 1)[0]
            for key in self.mirror.keys
            if key.startswith(self.prefix) and key.endswith("/spec")
        }
        return sorted(found)

    def _under(self, group: str, kind: str) -> dict[str, dict[str, Any]]:
        base = f"{self.prefix}{group}/{kind}/"
        return {
            key[len(base) :]: load_json(entry)
            for key, entry in self.mirror.keys.items()
            if key.startswith(base)
        }

    def view(self, group: str) -> dict[str, Any] | None:
        spec = load_json(self.mirror.keys.get(f"{self.prefix}{group}/spec"))
        policy = _policy(spec)
        if policy is None:
            return None
        members = self._under(group, "members")
        slots = self._under(group, "slots")
        peers = [peer_from(doc) for doc in members.values()]
        snap = group_snapshot(group, policy, peers)
        out_members = []
        for name in spec.get("members", []):
            doc = members.get(name)
            if doc is None:
                out_members.append({"member": name, "role": "absent", "healthy": False})
                continue
            out_members.append(
                {
                    "member": name,
                    "host": doc.get("host"),
                    "address": doc.get("address"),
                    "role": doc.get("role"),
                    "healthy": bool(doc.get("healthy")),
                    "detail": doc.get("detail"),
                    "position": doc.get("position"),
                    "slot": doc.get("slot"),
                    "epoch": doc.get("epoch"),
                    "pid": doc.get("pid"),
                    "decision": doc.get("decision"),
                }
            )
        if snap.active == 0:
            health = "DOWN"
        elif snap.vacancies:
            health = "SWITCHING_OVER"
        elif snap.healthy < policy.members:
            health = "DEGRADED"
        else:
            health = "OK"
        epoch_entry = self.mirror.keys.get(f"{self.prefix}{group}/epoch")
        return {
            "name": group,
            "policy": spec.get("policy"),
            "mode": spec.get("mode", "slots"),
            "health": health,
            "activeRequired": policy.slots or policy.members,
            "active": self._actives(policy, slots, out_members),
            "epoch": int(epoch_entry.value) if epoch_entry else None,
            "members": out_members,
            "lastSwitchover": self.switchovers.get(group),
            "alarms": sorted(a.fault_type for a in self.raised.get(group, frozenset())),
        }

    @staticmethod
    def _actives(
        policy: GroupPolicy, slots: dict[str, dict[str, Any]], members: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        if not policy.slots:
            return [
                {"member": m["member"], "address": m.get("address")}
                for m in members
                if m["healthy"]
            ]
        return [
            {
                "slot": int(s),
                "member": d.get("member"),
                "address": d.get("address"),
                "epoch": d.get("epoch"),
            }
            for s, d in sorted(slots.items())
        ]

    def views(self) -> list[dict[str, Any]]:
        return [v for v in (self.view(g) for g in self.names()) if v is not None]

    # --- the switch-over timeline -----------------------------------------------------------

    def _track(self, group: str) -> str | None:
        """Note when a slot's holder changes: lost (released or not), fenced, promoted, serving.
        Returns what changed since the last call, if a holder did."""
        slots = self._under(group, "slots")
        released = self._under(group, "released")
        members = self._under(group, "members")
        switched = None
        for slot, doc in slots.items():
            key = f"{group}/{slot}"
            before = self.holders.get(key)
            self.holders[key] = doc
            if before is None or before.get("epoch") == doc.get("epoch"):
                continue
            rel = released.get(slot, {})
            lost_at = rel.get("t") if rel.get("epoch") == before.get("epoch") else None
            fence = load_json(self.mirror.keys.get(self.fenced + str(before.get("host"))))
            timeline = {
                "slot": int(slot),
                "from": before.get("member"),
                "to": doc.get("member"),
                "epoch": doc.get("epoch"),
                "reason": rel.get("reason") if lost_at else "holder lost (fenced or lease lapsed)",
                "detected": lost_at or fence.get("failedAt"),
                "fenced": fence.get("t"),
                "promoted": doc.get("t"),
                "serving": None,
            }
            self.switchovers[group] = timeline
            if (risk := passed_over(doc)) is not None:
                self.at_risk[group] = risk
                log.error("group %s: %s", group, risk)
            switched = (
                f"slot {slot}: {before.get('member')} -> {doc.get('member')} "
                f"(epoch {doc.get('epoch')}): {timeline['reason']}"
            )
        last = self.switchovers.get(group)
        if last and last["serving"] is None:
            member = members.get(str(last["to"]), {})
            if member.get("role") == "active" and member.get("epoch") == last["epoch"]:
                last["serving"] = member.get("t")
                start = last["detected"] or last["fenced"]
                if start:
                    last["switchoverSeconds"] = round(float(member.get("t", 0)) - start, 3)
        return switched

    # --- alarms -----------------------------------------------------------------------------

    async def _judge(self) -> None:
        for group in self.names():
            switched = self._track(group)
            spec = load_json(self.mirror.keys.get(f"{self.prefix}{group}/spec"))
            policy = _policy(spec)
            if policy is None:
                continue
            peers = [peer_from(doc) for doc in self._under(group, "members").values()]
            snap = group_snapshot(group, policy, peers)
            if group in self.at_risk:
                if snap.healthy == policy.members and not snap.vacancies:
                    del self.at_risk[group]  # whole again: the passed-over member caught up
                else:
                    snap = replace(snap, at_risk=self.at_risk[group])
            if not self._formed(group, snap.healthy == policy.members and not snap.vacancies):
                continue
            events, raised = decide_group_alarms(
                snap,
                self.raised.get(group, frozenset()),
                Location((("group", group),)),
                self.clock.now(),
                switched,
            )
            if not self.mine():
                continue  # the controller holding the singleton role raises group alarms
            if events:
                await self.faults.ingest_async(events)
            self.raised[group] = raised

    def _formed(self, group: str, complete: bool) -> bool:
        """A group is judged once it was seen complete, or FORMING seconds after it was first
        seen: members starting one after the other are no fault."""
        if group in self.formed:
            return True
        first = self.first_seen.setdefault(group, self.clock.monotonic())
        if complete or self.clock.monotonic() - first >= FORMING:
            self.formed.add(group)
            return True
        return False

    async def run(self, stop: asyncio.Event, settle: float = 0.05) -> None:
        task = asyncio.create_task(self.mirror.run(stop, self.common))
        freeing = asyncio.create_task(self._keep_freeing(stop))
        try:
            await self.mirror.ready.wait()
            while not stop.is_set():
                self.mirror.changed.clear()
                await self._judge()
                await asyncio.sleep(settle)  # a burst of changes is judged once
                waiter = asyncio.ensure_future(self.mirror.changed.wait())
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, timeout=2.0,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                waiter.cancel()
                stopper.cancel()
        finally:
            task.cancel()
            freeing.cancel()

    # --- fencing ----------------------------------------------------------------------------

    async def host_fenced(self, host: str, failed_at: float | None = None) -> None:
        """The host is powered off (confirmed): its members' roles are free to take now.
        `failed_at`: when the host was found failed (the switch-over's start). Until the
        backend has taken it, it is tried again every FREE_RETRY seconds: a standby may
        take the roles only then (given up once, no switch-over ever happened)."""
        self.unfreed[host] = {"t": self.clock.now().timestamp(), "failedAt": failed_at}
        await self._free(host)

    async def _free(self, host: str) -> None:
        mark = self.unfreed.get(host)
        if mark is None:
            return
        try:
            await self.coord.put(self.fenced + host, json.dumps(mark))
            _, entries = await self.coord.list(self.prefix)
            leases = {
                e.lease
                for e in entries
                if e.lease and load_json(e).get("host") == host and "/members/" in e.key
            }
            for lease in leases:
                await self.coord.revoke(lease)
        except Temporary as exc:
            log.error("could not free the roles of fenced host %s yet: %s", host, exc)
            return
        if self.unfreed.pop(host, None) is not None and leases:
            log.warning("host %s fenced: revoked %d member leases", host, len(leases))

    async def _keep_freeing(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FREE_RETRY)
            for host in list(self.unfreed):
                await self._free(host)

    async def host_back(self, host: str) -> None:
        self.unfreed.pop(host, None)
        if self.fenced + host in self.mirror.keys:
            try:
                await self.coord.delete(self.fenced + host)
            except Temporary as exc:
                log.warning("fenced mark of %s not removed: %s", host, exc)
