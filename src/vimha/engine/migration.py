"""Migration of instances (issue 19, VNF-7): started by an operator, a VNFM or a maintenance
session, carried out by the two hosts' agents, recorded from start to end.

  start (one unit of work): the instance ACTIVE and within its VNF's disruption budget; the
    kind its policy allows (domain/migration.choose, with what the last migrations of that
    hypervisor measured); a destination placed under every rule and claimed under the
    migration's id (the instance keeps its source's claim until it lands; its groups count
    it on both hosts); the instance MIGRATING; both hosts' agents woken.
  the destination's agent prepares            -> "prepared" (what the source needs)  READY
  the source's agent:  live: migrates         -> "migrated" (the hypervisor's downtime)
                       cold: stops, uploads the guest's disk (PUT .../state)  TRANSFERRED
  the destination's agent (cold) imports, starts -> "started"                  COMPLETED
  the source's agent probes the guest's port from before it starts to its first answer
  after: "measured" (the interruption, recorded; beyond the policy's bound: alarmed)

Completion moves the instance (host, claims, groups) in one unit of work; a failure gives it
back to its source (a cold one stopped there is started again), releases the destination,
and is alarmed. The singleton holder fails migrations that outlive `migration.timeout` or
whose host went down. Every step is a unit of work on stored state: a controller that dies
is replaced and the next one carries on from the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from vimha.config_vnf import MigrationConfig
from vimha.domain import instance_faults
from vimha.domain.budget import DisruptionBudget, admits
from vimha.domain.compute import (
    Instance,
    InstanceAction,
    InstanceStatus,
    Migration,
    Power,
    TaskState,
)
from vimha.domain.errors import Conflict, InvalidInput, NotFound, VimhaError
from vimha.domain.instance_faults import InstanceFault
from vimha.domain.migration import (
    HypervisorAbility,
    Kind,
    MigrationRecord,
    State,
    advance,
    choose,
    estimate,
    state_key,
    verdict,
)
from vimha.engine.compute import ComputeService, Done
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.migration")
SOURCE_PHASES = frozenset({"running", "migrated", "exported", "measured", "failed"})
DEST_PHASES = frozenset({"prepared", "started", "failed"})
DOWN = frozenset({"DOWN", "FENCED"})


class Migrations:
    def __init__(
        self,
        compute: ComputeService,
        config: MigrationConfig,
        holds_singleton: Callable[[], bool],
    ) -> None:
        self.compute = compute
        self.store = compute.store
        self.clock = compute.clock
        self.config = config
        self.holds_singleton = holds_singleton
        self.wake = asyncio.Event()
        self._estimates: dict[tuple[str, Kind], float] = {}
        self._estimated_at = -1e9

    # -- what the hosts can do, what was measured -----------------------------------------
    def ability(self, host: str) -> HypervisorAbility:
        """From what the host's agent last reported (its driver and whether it can
        migrate live)."""
        reported = self.store.compute.reported(host) or {}
        resources = self.store.compute.hosts().get(host)
        name = str(reported.get("hypervisor") or (resources.hypervisor if resources else ""))
        mig = reported.get("migration")
        info: Mapping[str, Any] = mig if isinstance(mig, Mapping) else {}
        return HypervisorAbility(name, bool(info.get("live", False)), str(info.get("note", "")))

    def estimates(self) -> dict[tuple[str, Kind], float]:
        """The interruption expected per (hypervisor, kind); recomputed every 10 s."""
        if time.monotonic() - self._estimated_at > 10.0:
            nominal = {
                (hv, Kind(kind)): ms
                for hv, kinds in self.config.nominal_ms.items()
                for kind, ms in kinds.items()
            }
            self._estimates = estimate(self.store.maintenance.migrations(limit=500), nominal)
            self._estimated_at = time.monotonic()
        return self._estimates

    def budget_of(self, uow: UnitOfWork, inst: Instance) -> tuple[str, DisruptionBudget]:
        if inst.spec.vnf_id is None:
            return "", DisruptionBudget()
        try:
            vnf = self.store.compute.vnf(inst.spec.vnf_id)
        except NotFound:
            return "", DisruptionBudget()
        return vnf.name, DisruptionBudget.from_descriptor(vnf.descriptor)

    def check_budget(self, uow: UnitOfWork, inst: Instance) -> None:
        """Conflict (409) with the reason when disrupting `inst` would break its VNF's
        disruption budget (the VNF's instances read, locked, in this unit of work)."""
        name, budget = self.budget_of(uow, inst)
        if not budget.declared or inst.spec.vnf_id is None:
            return
        members = uow.compute.vnf_instances(inst.spec.vnf_id)
        verdict = admits(budget, name, members, inst)
        if not verdict.ok:
            raise Conflict(f"not now: {verdict.reason}")

    # -- start ----------------------------------------------------------------------------
    def start(
        self,
        instance_id: str,
        user: str,
        dest: str | None = None,
        kind: Kind | None = None,
        session_id: str | None = None,
    ) -> MigrationRecord:
        """Start migrating an instance; Conflict (with the reason) when it cannot be now:
        its state, its policy, its VNF's budget, no valid host."""
        mig_id = str(uuid.uuid4())
        estimates = self.estimates()

        def work(uow: UnitOfWork, done: Done) -> MigrationRecord:
            now = self.clock.now()
            inst = uow.compute.instance_for_update(instance_id)
            if inst.status is not InstanceStatus.ACTIVE or inst.task_state is not None:
                state = inst.task_state.value if inst.task_state else inst.status.value
                raise Conflict(f"cannot migrate instance {inst.name} while it is {state}")
            source = inst.host
            if source is None:
                raise Conflict(f"cannot migrate instance {inst.name}: it has no host")
            if dest == source:
                raise InvalidInput(f"host: {inst.name} runs on {dest} already")
            if uow.maintenance.active_migration(inst.id) is not None:
                raise Conflict(f"instance {inst.name} is being migrated already")
            self.check_budget(uow, inst)
            policy = inst.spec.migration
            here = self.ability(source)
            first = choose(policy, here, here, estimates, kind)
            if not first.allowed:
                raise Conflict(f"{inst.name} not migrated: {first.reason}")
            image = self.store.compute.image(inst.spec.image_id)
            snap = self.compute.scheduler.snapshot(uow)
            placed = self.compute.scheduler.place(
                uow,
                snap,
                inst.id,
                inst.spec,
                image,
                {},
                now,
                0,
                exclude=frozenset({source}),
                rejoin=True,
                consumer=mig_id,
                host=dest,
            )
            choice = choose(policy, here, self.ability(placed.host), estimates, kind)
            if choice.kind is None:
                raise Conflict(f"{inst.name} not migrated to {placed.host}: {choice.reason}")
            bound = policy.max_interruption_ms if policy.policy is Migration.LIVE else None
            rec = MigrationRecord(
                mig_id,
                inst.id,
                inst.name,
                inst.spec.vnf_id,
                choice.kind,
                source,
                placed.host,
                State.PREPARING,
                f"{choice.reason}; asked by {user}",
                user,
                now,
                now,
                bound_ms=bound,
                hypervisor=here.name,
                session_id=session_id,
                incarnation=inst.incarnation,
            )
            uow.maintenance.add_migration(rec)
            new = inst.evolve(now, status=InstanceStatus.MIGRATING, task_state=TaskState.MIGRATING)
            uow.compute.update_instance(inst, new)
            message = f"{choice.kind.value} to {placed.host} ({choice.reason})"
            uow.compute.add_action(
                InstanceAction(
                    inst.id, "migrate", f"req-{mig_id}", user, now, None, "in-progress", message
                )
            )
            done.generations[source] = uow.compute.bump(source)
            done.generations[placed.host] = placed.generation
            self.compute.notify(uow, done, new, f"migration {mig_id}: {message}", "migrate")
            return rec

        rec = self.compute.run(work)
        log.warning(
            "instance %s: %s migration to %s (%s)",
            rec.instance_name,
            rec.kind.value,
            rec.dest,
            rec.reason,
        )
        return rec

    # -- what the agents report -------------------------------------------------------------
    def on_phase(self, uow: UnitOfWork, done: Done, host: str, item: Mapping[str, Any]) -> None:
        """A phase an agent reported (inside the unit of work of its report). Repeats and
        phases from the wrong host are ignored."""
        phase = str(item.get("phase", ""))
        try:
            rec = uow.maintenance.migration_for_update(str(item.get("id", "")))
        except NotFound:
            return
        if (host == rec.source and phase not in SOURCE_PHASES) or (
            host == rec.dest and phase not in DEST_PHASES
        ):
            return
        if host not in (rec.source, rec.dest):
            return
        now = self.clock.now()
        detail = str(item.get("detail", ""))
        if phase == "measured":
            self._measured(uow, done, rec, item)
            return
        if phase == "failed":
            if rec.active:
                self.fail(uow, done, rec, f"{host}: {detail}", bool(item.get("stopped")))
            return
        new = advance(rec, phase, now)
        if new is None:
            return
        if phase == "prepared":
            new = new.evolve(now, target=dict(item.get("target") or {}), detail=detail)
        elif phase == "migrated":
            downtime = item.get("downtimeMs")
            new = new.evolve(now, downtime_ms=None if downtime is None else float(downtime))
        uow.maintenance.update_migration(rec, new)
        if new.state is State.COMPLETED:
            self._complete(uow, done, new)
        elif new.state is State.READY:
            done.generations[rec.source] = uow.compute.bump(rec.source)
        log.info(
            "migration %s of %s: %s -> %s",
            rec.id,
            rec.instance_name,
            rec.state.value,
            new.state.value,
        )

    def exported(self, host: str, migration_id: str, digest: str) -> MigrationRecord:
        """The source uploaded the stopped guest's state (cold): the destination imports it."""

        def work(uow: UnitOfWork, done: Done) -> MigrationRecord:
            rec = uow.maintenance.migration_for_update(migration_id)
            if host != rec.source:
                raise NotFound(f"migration {migration_id} has no source {host}")
            new = advance(rec, "exported", self.clock.now())
            if new is None:
                if rec.state is State.TRANSFERRED and rec.state_digest == digest:
                    return rec  # a repeat
                raise Conflict(f"migration {migration_id} is {rec.state.value}")
            new = new.evolve(new.updated_at, state_digest=digest, stopped=True)
            uow.maintenance.update_migration(rec, new)
            done.generations[rec.dest] = uow.compute.bump(rec.dest)
            return new

        return self.compute.run(work)

    def _measured(
        self, uow: UnitOfWork, done: Done, rec: MigrationRecord, item: Mapping[str, Any]
    ) -> None:
        if rec.interruption_ms is not None:
            return
        now = self.clock.now()
        value = item.get("interruptionMs")
        detail = str(item.get("detail", ""))
        measured = rec.evolve(
            now,
            interruption_ms=None if value is None else float(value),
            detail=detail or rec.detail,
        )
        uow.maintenance.update_migration(rec, measured)
        what = (
            f"interrupted {measured.interruption_ms:.0f} ms"
            if measured.interruption_ms is not None
            else f"interruption not measured ({detail})"
        )
        bound = f" (bound {rec.bound_ms} ms)" if rec.bound_ms is not None else ""
        uow.compute.add_action(
            InstanceAction(
                rec.instance_id,
                "migrate-measured",
                f"req-{rec.id}",
                "probe",
                now,
                now,
                "success",
                f"{rec.kind.value} migration {rec.id}: {what}{bound}",
            )
        )
        why = verdict(measured)
        if why is not None:
            try:
                inst = uow.compute.instance_for_update(rec.instance_id)
            except NotFound:
                return
            location = self.compute.location(inst.host)
            self.compute.alarm(
                uow,
                done,
                [
                    instance_faults.raised(
                        inst, InstanceFault.MIGRATION_EXCEEDED, why, now, location
                    )
                ],
            )
            log.error("%s", why)

    def _complete(self, uow: UnitOfWork, done: Done, rec: MigrationRecord) -> None:
        """The guest runs on the destination: the instance, its claims and groups move."""
        now = self.clock.now()
        inst = uow.compute.instance_for_update(rec.instance_id)
        held = uow.compute.release(rec.id)
        if inst.status is not InstanceStatus.MIGRATING or inst.host != rec.source:
            if held is not None:  # deleted or recovered meanwhile: nothing lands
                done.generations[held[0]] = held[1]
            return
        source = uow.compute.release(inst.id)
        if source is not None:
            done.generations[source[0]] = source[1]
        generation = held[1] if held is not None else uow.compute.bump(rec.dest)
        done.generations[rec.dest] = uow.compute.claim(
            rec.dest, generation, inst.id, inst.spec.flavor, now
        )
        uow.compute.moved_in_groups(inst.id)
        new = inst.evolve(
            now, host=rec.dest, status=InstanceStatus.ACTIVE, task_state=None, power=Power.RUNNING
        )
        uow.compute.update_instance(inst, new)
        message = f"{rec.kind.value} migration {rec.id}: {rec.source} -> {rec.dest}"
        uow.compute.finish_action(inst.id, "migrate", "success", message, now)
        done.generations[rec.source] = uow.compute.bump(rec.source)
        if rec.state_digest:
            uow.maintenance.drop_blobs([state_key(rec.id)])
        self.compute.notify(uow, done, new, f"migrated: {message}", "migrate")
        log.warning("instance %s migrated: %s", inst.name, message)

    def fail(
        self, uow: UnitOfWork, done: Done, rec: MigrationRecord, why: str, stopped: bool = False
    ) -> None:
        """The migration ends without moving the instance: it stays on its source (started
        again there if a cold migration had stopped it); the destination is released."""
        now = self.clock.now()
        ended = rec.evolve(
            now, state=State.FAILED, detail=why, finished_at=now, stopped=rec.stopped or stopped
        )
        uow.maintenance.update_migration(rec, ended)
        held = uow.compute.release(rec.id)
        if held is not None:
            done.generations[held[0]] = held[1]
        else:
            done.generations[rec.dest] = uow.compute.bump(rec.dest)
        if rec.state_digest:
            uow.maintenance.drop_blobs([state_key(rec.id)])
        try:
            inst = uow.compute.instance_for_update(rec.instance_id)
        except NotFound:
            return
        if inst.status is InstanceStatus.MIGRATING and inst.host == rec.source:
            if ended.stopped:  # its agent starts it again once the migration is gone
                new = inst.evolve(
                    now,
                    status=InstanceStatus.SHUTOFF,
                    task_state=TaskState.POWERING_ON,
                    power=Power.RUNNING,
                )
            else:
                new = inst.evolve(now, status=InstanceStatus.ACTIVE, task_state=None)
            uow.compute.update_instance(inst, new)
            message = f"{rec.kind.value} migration {rec.id} to {rec.dest} failed: {why}"
            uow.compute.finish_action(inst.id, "migrate", "error", message, now)
            location = self.compute.location(inst.host)
            self.compute.alarm(
                uow,
                done,
                [
                    instance_faults.raised(
                        new, InstanceFault.MIGRATION_FAILED, message, now, location
                    )
                ],
            )
            self.compute.notify(uow, done, new, message, "migrate")
            log.error("instance %s: %s", inst.name, message)
        done.generations[rec.source] = uow.compute.bump(rec.source)

    def abandon(self, uow: UnitOfWork, done: Done, inst: Instance, why: str) -> None:
        """The instance is deleted or recovered elsewhere: its migration ends, FAILED."""
        rec = uow.maintenance.active_migration(inst.id)
        if rec is not None:
            self.fail(uow, done, rec, why)

    # -- the loop on the singleton holder ---------------------------------------------------
    async def run(
        self, stop: asyncio.Event, health: Callable[[str], str], every: float = 1.0
    ) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), every)
            self.wake.clear()
            if not self.holds_singleton():
                continue
            try:
                await asyncio.to_thread(self.check, health)
            except VimhaError as exc:
                log.warning("migration check: %s (again soon)", exc.detail)
            except Exception:  # the loop must go on
                log.exception("migration check failed")

    def check(self, health: Callable[[str], str]) -> int:
        """Fail the migrations that outlived the timeout, or whose host went down."""
        now = self.clock.now()
        failed = 0
        for rec in self.store.maintenance.migrations(active=True):
            why = None
            if now - rec.created_at > timedelta(seconds=self.config.timeout):
                why = f"timed out after {self.config.timeout:g} s ({rec.state.value})"
            elif health(rec.dest) in DOWN:
                why = f"its destination {rec.dest} is {health(rec.dest)}"
            elif health(rec.source) in DOWN and rec.state is not State.TRANSFERRED:
                why = f"its source {rec.source} is {health(rec.source)}"
            if why is None:
                continue

            def work(
                uow: UnitOfWork, done: Done, rec: MigrationRecord = rec, why: str = why
            ) -> None:
                fresh = uow.maintenance.migration_for_update(rec.id)
                if fresh.active:
                    self.fail(uow, done, fresh, why)

            self.compute.run(work)
            failed += 1
        return failed

    def view(self, rec: MigrationRecord) -> dict[str, Any]:
        base = self.compute.base_url
        out = rec.to_dict()
        out["_links"] = {
            "self": {"href": f"{base}/vim/v1/migrations/{rec.id}"},
            "instance": {"href": f"{base}/vim/v1/instances/{rec.instance_id}"},
        }
        return out


def agent_doc(rec: MigrationRecord, role: str, timeout: float) -> dict[str, Any]:
    """What an agent is told of a migration in its desired state."""
    return {
        "id": rec.id,
        "role": role,
        "kind": rec.kind.value,
        "state": rec.state.value,
        "source": rec.source,
        "dest": rec.dest,
        "target": dict(rec.target),
        "maxDowntimeMs": rec.bound_ms,
        "limitS": round(timeout * 2 / 3, 1),
        "stateDigest": rec.state_digest,
    }


__all__ = ["Migrations", "agent_doc"]
