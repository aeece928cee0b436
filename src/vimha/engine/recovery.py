"""Recovery of VNF instances (issue 17): what to do when an instance or its host fails.

- An instance's failure is handled in the unit of work that learns it (an agent's report):
  the VDU's policy (domain/recovery.py) restarts it in place at once, replaces it on another
  host, or only alarms. A restart due later (backoff) is done by the loop below.
- A host's failure is handled by the loop on the controller holding the singleton role: as
  soon as the host is known off (fencing confirmed, or an operator's confirmation), its
  instances are re-placed in priority order, each a new incarnation from its stored spec
  (same ports, same config drive) on another host. Nothing is waited for beyond that.
  A host down but not known off leaves its instances UNKNOWN, alarmed.
- The workflow's state is the instances themselves: an instance still on a failed host is
  yet to be recovered; moving it is one unit of work (claim, incarnation, host, release);
  a holder that dies mid-way is replaced and the next one carries on with what is left.
  Nothing is recovered twice, nothing forgotten.
- Instances that could not be placed (no capacity), and instances pre-empted by higher
  priorities, are placed again as capacity appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from vimha.domain import instance_faults
from vimha.domain.compute import (
    Fault,
    Instance,
    InstanceAction,
    InstanceStatus,
    Power,
    TaskState,
)
from vimha.domain.errors import NotFound, VimhaError
from vimha.domain.incidents import Stage
from vimha.domain.instance_faults import InstanceFault
from vimha.domain.recovery import RecoveryPolicy, Step, recovery_order, remedy
from vimha.engine.compute import PREEMPTED, ComputeService, Done
from vimha.engine.incidents import IncidentService, Subject
from vimha.engine.scheduler import NoValidHost
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.recovery")
UNPLACED = "unplaced"
RESTART_DUE = "restart-due:"
FAILURES = frozenset({"crashed", "died", "hung", "watchdog", "gone"})


@dataclass(frozen=True, slots=True)
class HostState:
    """What recovery needs to know of a host (from the health loop and the store)."""

    health: str
    known_off: bool  # fencing confirmed, or an operator confirmed it off, since it failed
    down_for: float  # seconds since it failed (0 if up)


class Recovery:
    def __init__(
        self,
        compute: ComputeService,
        hosts: Callable[[], dict[str, HostState]],
        holds_singleton: Callable[[], bool],
        unknown_after: float = 3.0,
    ) -> None:
        self.compute = compute
        self.store = compute.store
        self.clock = compute.clock
        self.hosts = hosts
        self.holds_singleton = holds_singleton
        self.unknown_after = unknown_after
        self.wake = asyncio.Event()
        # Steps only recovery knows, for the incidents' timelines (issue 20); set by the
        # runtime once insight exists.
        self.incidents: IncidentService | None = None
        self.last_round: dict[str, int] = {}  # what the last round did, for the logs
        # Unplaced and pre-empted instances are tried again when capacity changed (some
        # host's generation moved), or every 10 s.
        self._capacity_seen = -1
        self._retry_at = datetime.min.replace(tzinfo=self.clock.now().tzinfo)

    # -- an instance's failure (inside the unit of work that learnt it) ------------------
    def on_failure(self, uow: UnitOfWork, done: Done, inst: Instance, why: str) -> Instance:
        """Apply the VDU's recovery policy to a failed instance; returns it as it is now."""
        now = self.clock.now()
        policy = RecoveryPolicy.from_dict(dict(inst.spec.recovery))
        restarts = [
            a.started_at
            for a in self.store.compute.actions(inst.id)
            if a.action == "recover-restart"
        ]
        plan = remedy(policy, restarts, now)
        if plan.step is Step.RESTART:
            return self.restart(uow, done, inst, plan.reason)
        if plan.step is Step.REPLACE:
            moved = self.relocate(uow, done, inst, f"{why}: {plan.reason}", exclude=True)
            return moved or inst
        if plan.step is Step.WAIT and plan.due is not None:
            new = inst.evolve(
                now, notes=(*_without(inst.notes, RESTART_DUE), RESTART_DUE + plan.due.isoformat())
            )
            uow.compute.update_instance(inst, new)
            return new
        return inst

    def restart(self, uow: UnitOfWork, done: Done, inst: Instance, reason: str) -> Instance:
        """In place: a hard reboot on its disk (the agent powers it on again)."""
        now = self.clock.now()
        new = inst.evolve(
            now,
            task_state=TaskState.REBOOTING_HARD,
            power=Power.RUNNING,
            reboot_seq=inst.reboot_seq + 1,
            reboot_hard=True,
            notes=_without(inst.notes, RESTART_DUE),
        )
        uow.compute.update_instance(inst, new)
        uow.compute.add_action(
            InstanceAction(
                inst.id, "recover-restart", _req(), "recovery", now, None, "in-progress", reason
            )
        )
        if inst.host:
            done.generations[inst.host] = uow.compute.bump(inst.host)
        self.compute.notify(uow, done, new, reason, "recover-restart")
        log.warning("instance %s: %s", inst.name, reason)
        return new

    def relocate(
        self,
        uow: UnitOfWork,
        done: Done,
        inst: Instance,
        reason: str,
        exclude: bool = True,
        quiet: bool = False,
        action: str = "recover",
        keep_stopped: bool = False,
    ) -> Instance | None:
        """A new incarnation on another host (or any host when `exclude` is off), from the
        stored spec: fresh disk, same ports and config drive. Its old claim is given back
        first. With no valid host it is left in ERROR, unplaced, alarmed (tried again as
        capacity appears). Returns the instance moved, or None if it could not be.
        `action` names it in the instance's actions (a maintenance session's `evict`);
        `keep_stopped`: a stopped instance is rebuilt stopped (never started by moving)."""
        now = self.clock.now()
        if self.compute.abandon is not None and uow.maintenance.active_migration(inst.id):
            self.compute.abandon(uow, done, inst, reason)
            inst = uow.compute.instance_for_update(inst.id)
        old_host = inst.host
        image = self.store.compute.image(inst.spec.image_id)
        held = uow.compute.release(inst.id)
        if held is not None:
            done.generations[held[0]] = held[1]
        snap = self.compute.scheduler.snapshot(uow)
        avoid = frozenset({old_host}) if exclude and old_host else frozenset()
        try:
            placed = self.compute.scheduler.place(
                uow,
                snap,
                inst.id,
                inst.spec,
                image,
                {},
                now,
                0 if quiet else inst.spec.priority,  # a retry pre-empts nobody
                exclude=avoid,
                rejoin=True,
                recovery=True,
            )
        except NoValidHost as exc:
            if quiet:  # a retry: nothing changes (the unit of work is rolled back)
                raise _NotNow(exc.detail) from None
            new = inst.evolve(
                now,
                status=InstanceStatus.ERROR,
                task_state=None,
                host=None,
                fault=Fault(503, f"not recovered: {exc.detail}", now),
                notes=(*_without(inst.notes, UNPLACED), UNPLACED),
            )
            uow.compute.update_instance(inst, new)
            uow.compute.add_action(
                InstanceAction(
                    inst.id, "recover", _req(), "recovery", now, now, "error", exc.detail
                )
            )
            self.compute.alarm(
                uow,
                done,
                [
                    instance_faults.raised(
                        new,
                        InstanceFault.UNPLACED,
                        f"{reason}; {exc.detail}",
                        now,
                        self.compute.location(old_host),
                    )
                ],
            )
            if self.incidents is not None:
                on_host = exclude and old_host is not None
                subject = Subject.host(old_host or "") if on_host else Subject.instance(inst.id)
                note = f"{inst.name}: no valid host ({exc.detail})"
                self.incidents.record_in(uow, subject, Stage.NOTE, now, note, inst.id)
            log.error("instance %s not recovered: %s", inst.name, exc.detail)
            return None
        done.generations[placed.host] = placed.generation
        new = inst.evolve(
            now,
            host=placed.host,
            incarnation=inst.incarnation + 1,
            status=InstanceStatus.REBUILDING,
            task_state=TaskState.RECOVERING,
            power=Power.STOPPED if keep_stopped else Power.RUNNING,
            notes=(*_without(inst.notes, UNPLACED, PREEMPTED, RESTART_DUE), *placed.notes),
        )
        uow.compute.update_instance(inst, new)
        message = f"{reason}: incarnation {new.incarnation} on {placed.host}"
        user = "maintenance" if action == "evict" else "recovery"
        uow.compute.add_action(
            InstanceAction(inst.id, action, _req(), user, now, None, "in-progress", message)
        )
        if old_host is not None:
            done.generations[old_host] = uow.compute.bump(old_host)
        self.compute.notify(uow, done, new, message, action)
        log.warning("instance %s: %s", inst.name, message)
        return new

    # -- the loop on the singleton holder ------------------------------------------------
    async def run(self, stop: asyncio.Event, every: float = 0.5) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), every)
            self.wake.clear()
            if not self.holds_singleton():
                continue
            try:
                await asyncio.to_thread(self.round)
            except VimhaError as exc:
                log.warning("recovery round: %s (again soon)", exc.detail)
            except Exception:  # the loop must go on; the next round starts afresh
                log.exception("recovery round failed")

    def round(self) -> dict[str, int]:
        """One look at everything; each fix is a unit of work of its own."""
        now = self.clock.now()
        states = self.hosts()
        done = {"recovered": 0, "unknown": 0, "restarted": 0, "replaced": 0}
        by_host: dict[str | None, list[Instance]] = {}
        for inst in self.store.compute.instances():
            by_host.setdefault(inst.host, []).append(inst)
        for host, instances in by_host.items():
            state = states.get(host or "")
            if host is None or state is None or state.health in ("UP", "DEGRADED", "MAINTENANCE"):
                continue  # a host in maintenance is emptied by its session (issue 19)
            if state.known_off:
                for inst in recovery_order(instances):
                    if self._move(inst.id, host, f"host {host} failed ({state.health})"):
                        done["recovered"] += 1
            elif state.down_for >= self.unknown_after:
                done["unknown"] += self._mark_unknown(host, instances)
        capacity = sum(self.store.compute.generations().values())
        retry = capacity != self._capacity_seen or now >= self._retry_at
        if retry:
            self._capacity_seen, self._retry_at = capacity, now + timedelta(seconds=10)
        for inst in [i for v in by_host.values() for i in v]:
            if UNPLACED in inst.notes and inst.host is None:
                if retry and self._move(inst.id, None, "placed as capacity appeared", quiet=True):
                    done["replaced"] += 1
            elif PREEMPTED in inst.notes and inst.status is InstanceStatus.SHUTOFF:
                if retry and self._move(
                    inst.id,
                    inst.host,
                    "started again after its pre-emption",
                    exclude=False,
                    quiet=True,
                ):
                    done["replaced"] += 1
            elif (
                (due := _due(inst.notes)) is not None and due <= now and self._restart_due(inst.id)
            ):
                done["restarted"] += 1
        if any(done.values()):
            log.warning("recovery round: %s", done)
        self.last_round = done
        return done

    def _move(
        self,
        instance_id: str,
        from_host: str | None,
        reason: str,
        exclude: bool = True,
        quiet: bool = False,
    ) -> bool:
        def work(uow: UnitOfWork, done: Done) -> bool:
            inst = uow.compute.instance_for_update(instance_id)
            if inst.status is InstanceStatus.DELETED or inst.host != from_host:
                return False  # moved, deleted or placed meanwhile (by an earlier holder)
            if inst.task_state is TaskState.DELETING:
                return False
            return self.relocate(uow, done, inst, reason, exclude, quiet) is not None

        try:
            return self.compute.run(work)
        except (NotFound, _NotNow):
            return False

    def _restart_due(self, instance_id: str) -> bool:
        def work(uow: UnitOfWork, done: Done) -> bool:
            inst = uow.compute.instance_for_update(instance_id)
            if _due(inst.notes) is None or inst.status is InstanceStatus.DELETED:
                return False
            self.restart(uow, done, inst, "restart due after its backoff")
            return True

        return self.compute.run(work)

    def _mark_unknown(self, host: str, instances: list[Instance]) -> int:
        """A host down and not known off: its instances may still run. UNKNOWN, alarmed;
        nothing recovered until it is fenced or an operator confirms it is off."""
        targets = [
            i.id
            for i in instances
            if i.status not in (InstanceStatus.UNKNOWN, InstanceStatus.DELETED)
        ]
        if not targets:
            return 0

        def work(uow: UnitOfWork, done: Done) -> int:
            now = self.clock.now()
            n = 0
            for instance_id in targets:
                inst = uow.compute.instance_for_update(instance_id)
                if inst.host != host or inst.status in (
                    InstanceStatus.UNKNOWN,
                    InstanceStatus.DELETED,
                ):
                    continue
                why = (
                    f"host {host} is down and not fenced: {inst.name} may still run; "
                    f"nothing is recovered until the host is fenced or confirmed off "
                    f"(vimha hosts confirm-down {host})"
                )
                new = inst.evolve(now, status=InstanceStatus.UNKNOWN)
                uow.compute.update_instance(inst, new)
                self.compute.alarm(
                    uow,
                    done,
                    [
                        instance_faults.raised(
                            new, InstanceFault.UNKNOWN, why, now, self.compute.location(host)
                        )
                    ],
                )
                self.compute.notify(uow, done, new, why)
                n += 1
            return n

        return self.compute.run(work)


class _NotNow(VimhaError):
    """A retry found no valid host yet: nothing is changed."""


def _req() -> str:
    return f"req-{uuid.uuid4()}"


def _without(notes: tuple[str, ...], *prefixes: str) -> tuple[str, ...]:
    return tuple(n for n in notes if not n.startswith(prefixes))


def _due(notes: tuple[str, ...]) -> datetime | None:
    for note in notes:
        if note.startswith(RESTART_DUE):
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(note[len(RESTART_DUE) :])
    return None


__all__ = ["HostState", "Recovery"]
