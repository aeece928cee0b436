"""VNFs and their instances (issue 14): creation with placement and claims, requests on an
instance (reboot, stop, start, pause, delete), all recorded and notified.

Each change is one unit of work: the instance, its claim on the host, its ports, its action
record, its notification and its alarms commit together or not at all (a creation that
cannot place every instance leaves nothing behind: no VNF, no claim, no address). Hosts
whose generation moved are then handed to the host watch, which wakes their agents.
"""

from __future__ import annotations

import functools
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vimha.domain import instance_faults, instance_states
from vimha.domain.affinity import (
    GroupPolicy,
    PlacementGroup,
    check_group,
    domain_of,
    fits_one_domain,
)
from vimha.domain.alarms import FaultEvent, Location
from vimha.domain.clock import Clock
from vimha.domain.compute import (
    ConfigDrive,
    Fault,
    Flavor,
    Image,
    Instance,
    InstanceAction,
    InstanceSpec,
    InstanceStatus,
    MigrationPolicy,
    Network,
    NetworkRequest,
    Power,
    Sal,
    TaskState,
    Vdu,
    Vnf,
    VnfRequest,
    WatchdogSpec,
)
from vimha.domain.errors import InvalidInput, NotFound, PreconditionFailed
from vimha.domain.instance_faults import InstanceFault
from vimha.domain.preemption import PreemptionPlan, Victim
from vimha.domain.sal import SalClass
from vimha.domain.subscriptions import NotificationType, Subject
from vimha.engine.faults import FaultService
from vimha.engine.host_watch import HostWatch
from vimha.engine.instance_spec import allocate_ports, flavor_watchdog
from vimha.engine.scheduler import HostView, NoValidHost, Scheduler, resolve_hosts
from vimha.engine.writer import StoreWriter
from vimha.ports.store import DeliveryJob, Store, UnitOfWork

log = logging.getLogger("vimha.compute")
PREEMPTED = "preempted"
# Statuses in which an instance holds its claim (a pre-emption frees it).
HOLDING = frozenset(
    {
        InstanceStatus.BUILDING,
        InstanceStatus.ACTIVE,
        InstanceStatus.PAUSED,
        InstanceStatus.REBUILDING,
    }
)
T = TypeVar("T")
DEFAULT_WATCHDOG_TIMEOUT = 10.0


__all__ = ["ComputeService", "Done", "HostView", "InstancePlan", "NoValidHost"]


@dataclass(frozen=True, slots=True)
class InstancePlan:
    """One instance to create, its references resolved."""

    name: str
    index: int
    flavor: Flavor
    image: Image
    networks: tuple[tuple[NetworkRequest, tuple[Network, ...]], ...]
    config_drive: ConfigDrive = field(default_factory=ConfigDrive)
    watchdog: WatchdogSpec | None = None
    migration: MigrationPolicy = field(default_factory=MigrationPolicy)
    vdu: str | None = None
    sal: Sal = Sal.LEVEL_3
    priority: int = 0
    metadata: Mapping[str, str] = field(default_factory=dict)
    hints: Mapping[str, Any] = field(default_factory=dict)
    key_name: str | None = None
    project: str = "admin"
    instance_id: str | None = None
    groups: tuple[str, ...] = ()  # placement groups (ids) it joins
    preemptible: bool = True
    recovery: Mapping[str, Any] = field(default_factory=dict)
    health_check: Mapping[str, Any] | None = None


@dataclass(slots=True)
class Done:
    """A unit of work's result and what to hand on once it committed."""

    value: Any = None
    jobs: list[DeliveryJob] = field(default_factory=list)
    generations: dict[str, int] = field(default_factory=dict)


class ComputeService:
    def __init__(
        self,
        store: Store,
        writer: StoreWriter,
        faults: FaultService,
        clock: Clock,
        watch: HostWatch,
        hosts: Callable[[], Mapping[str, HostView]],
        base_url: str,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.store = store
        self.writer = writer
        self.faults = faults
        self.clock = clock
        self.watch = watch
        self.hosts = hosts
        self.base_url = base_url
        self.rng = random.Random()
        self.scheduler = scheduler or Scheduler(
            hosts, ("site", "zone", "rack", "host"), {s: SalClass(s) for s in Sal}
        )
        # Ends an instance's migration when it is deleted or recovered (engine/migration.py).
        self.abandon: Callable[[UnitOfWork, Done, Instance, str], None] | None = None

    # -- units of work ------------------------------------------------------------------
    def run(self, work: Callable[[UnitOfWork, Done], T]) -> T:
        """Run `work(uow, done)` in one unit of work; hand its jobs and generations on."""

        def unit(uow: UnitOfWork) -> Done:
            done = Done()
            done.value = work(uow, done)
            return done

        result = self.writer.call(unit, self._after)
        return result.value  # type: ignore[no-any-return]

    async def arun(self, work: Callable[[UnitOfWork, Done], T]) -> T:
        def unit(uow: UnitOfWork) -> Done:
            done = Done()
            done.value = work(uow, done)
            return done

        result = await self.writer.acall(unit, self._after)
        return result.value  # type: ignore[no-any-return]

    def _after(self, done: Done) -> None:
        if done.jobs:
            self.faults.on_enqueued(done.jobs)
        self.watch.committed(done.generations)

    def location(self, host: str | None) -> Location:
        view = self.hosts().get(host or "")
        return view.location if view is not None else Location()

    def notify(
        self,
        uow: UnitOfWork,
        done: Done,
        instance: Instance,
        reason: str,
        action: str | None = None,
    ) -> None:
        payload = dict(instance_faults.change_payload(instance, reason, action, self.base_url))
        obj = instance_faults.object_of(instance)
        subject = Subject(
            NotificationType.INSTANCE_CHANGE, object_id=obj, location=self.location(instance.host)
        )
        done.jobs += self.faults.notify_in(
            uow, NotificationType.INSTANCE_CHANGE, payload, subject, obj
        )

    def alarm(self, uow: UnitOfWork, done: Done, events: Sequence[FaultEvent]) -> None:
        if events:
            _, jobs = self.faults.ingest_in(uow, events)
            done.jobs += jobs

    # -- creation -----------------------------------------------------------------------
    def plan_vdu(
        self,
        vdu: Vdu,
        vnf_name: str,
        sal: Sal,
        priority: int,
        start: int = 0,
        where: str = "vdu",
        groups: tuple[str, ...] = (),
        preemptible: bool = True,
    ) -> list[InstancePlan]:
        """The instances of a VDU, references resolved (InvalidInput names the field)."""
        flavor = _resolve(self.store.compute.flavor, vdu.flavor, f"{where}.flavor")
        image = _resolve(self.store.compute.image, vdu.image, f"{where}.image")
        if image.status != "active":
            raise InvalidInput(f"{where}.image: image {image.name} has no data yet")
        networks = []
        for i, req in enumerate(vdu.networks):
            nets = tuple(
                _resolve(self.store.compute.network, ref, f"{where}.networks.{i}")
                for ref in req.networks
            )
            networks.append((req, nets))
        watchdog = vdu.watchdog or flavor_watchdog(flavor, DEFAULT_WATCHDOG_TIMEOUT)
        return [
            InstancePlan(
                name=f"{vnf_name}-{vdu.name}-{start + k}",
                index=start + k,
                flavor=flavor,
                image=image,
                networks=tuple(networks),
                config_drive=vdu.config_drive,
                watchdog=watchdog,
                migration=vdu.migration,
                vdu=vdu.name,
                sal=sal,
                priority=priority,
                metadata=vdu.metadata,
                hints=vdu.hints,
                key_name=vdu.key_name,
                groups=groups,
                preemptible=preemptible,
                recovery=vdu.recovery,
                health_check=vdu.health_check,
            )
            for k in range(vdu.count)
        ]

    def create_vnf(self, req: VnfRequest, user: str) -> tuple[Vnf, list[Instance]]:
        names = [v.name for v in req.vdus]
        if len(set(names)) != len(names):
            raise InvalidInput("vdus: names must be unique within the VNF")
        vnf = Vnf(
            str(uuid.uuid4()),
            req.name,
            req.sal,
            req.priority,
            dict(req.descriptor),
            self.clock.now(),
            req.client_token,
            preemptible=req.preemptible,
        )
        plans: list[InstancePlan] = []
        made: list[PlacementGroup] = []
        for i, vdu in enumerate(req.vdus):
            groups = self.vdu_groups(vdu, vnf, f"vdus.{i}")
            made += [g for g in groups if g.vnf_id == vnf.id]
            plans += self.plan_vdu(
                vdu,
                req.name,
                req.sal,
                req.priority,
                where=f"vdus.{i}",
                groups=tuple(g.id for g in groups),
                preemptible=req.preemptible,
            )

        def work(uow: UnitOfWork, done: Done) -> list[Instance]:
            uow.compute.add_vnf(vnf)
            for group in made:
                uow.compute.add_group(group, self.clock.now())
            return self._create(uow, done, plans, vnf.id, user)

        instances = self.run(work)
        log.info("VNF %s created: %d instance(s)", vnf.name, len(instances))
        return vnf, instances

    def vdu_groups(self, vdu: Vdu, vnf: Vnf, where: str) -> list[PlacementGroup]:
        """The groups a VDU's instances join: made for its rules, and existing ones it
        names. A rule that cannot hold is refused before anything is stored."""
        out = []
        for n, rule in enumerate(vdu.placement):
            try:
                policy = GroupPolicy(rule.policy)
            except ValueError:
                raise InvalidInput(
                    f"{where}.placement.{n}.policy: {rule.policy!r} is not one of "
                    f"{', '.join(p.value for p in GroupPolicy)}"
                ) from None
            group = self.new_group(
                f"{vnf.name}-{vdu.name}-{policy.value}" + (f"-{n}" if n else ""),
                policy,
                rule.level,
                rule.max_per_domain,
                vnf.id,
                where=f"{where}.placement.{n}",
            )
            out.append(group)
            self.check_fits(group, vdu.count, vdu.flavor, f"{where}.placement.{n}")
        for ref in vdu.groups:
            out.append(_resolve(self.store.compute.group, ref, f"{where}.groups"))
        return out

    def new_group(
        self,
        name: str,
        policy: GroupPolicy,
        level: str,
        max_per_domain: int | None,
        vnf_id: str | None = None,
        where: str = "placementGroup",
    ) -> PlacementGroup:
        known = {lv for loc in self.scheduler.hosts().values() for lv, _ in loc.location.levels}
        try:
            check_group(policy, level, max_per_domain, self.scheduler.hierarchy, known)
        except InvalidInput as exc:
            raise InvalidInput(f"{where}: {exc.detail}") from None
        return PlacementGroup(str(uuid.uuid4()), name, policy, level, max_per_domain, vnf_id)

    def create_group(
        self, name: str, policy: GroupPolicy, level: str = "host", max_per_domain: int | None = None
    ) -> PlacementGroup:
        group = self.new_group(name, policy, level, max_per_domain)
        self.run(lambda uow, done: uow.compute.add_group(group, self.clock.now()))
        return group

    def check_fits(self, group: PlacementGroup, members: int, flavor_ref: str, where: str) -> None:
        """An affinity group whose members cannot fit one domain is refused at creation."""
        if group.policy is not GroupPolicy.AFFINITY:
            return
        flavor = _resolve(self.store.compute.flavor, flavor_ref, f"{where}.flavor")
        per_domain: dict[str, int] = {}
        views = self.scheduler.hosts()
        for name, res in self.store.compute.hosts().items():
            view = views.get(name)
            if view is None or not res.could_ever_fit(flavor):
                continue
            domain = domain_of(dict(view.location.levels), group.level, self.scheduler.hierarchy)
            if domain is None:
                continue
            fit = int(
                min(
                    res.free_vcpus // flavor.vcpus,
                    res.free_ram_mib // flavor.ram_mib,
                    res.free_disk_gib // flavor.disk_gib if flavor.disk_gib else 10**6,
                )
            )
            per_domain[domain] = per_domain.get(domain, 0) + max(fit, 0)
        if (why := fits_one_domain(group, members, per_domain)) is not None:
            raise InvalidInput(f"{where}: {why}")

    def create_instances(
        self, plans: Sequence[InstancePlan], user: str, vnf_id: str | None = None
    ) -> list[Instance]:
        return self.run(lambda uow, done: self._create(uow, done, plans, vnf_id, user))

    def _create(
        self,
        uow: UnitOfWork,
        done: Done,
        plans: Sequence[InstancePlan],
        vnf_id: str | None,
        user: str,
    ) -> list[Instance]:
        now = self.clock.now()
        snap = self.scheduler.snapshot(uow)
        used: dict[str, set[str]] = {}
        request_id = f"req-{uuid.uuid4()}"
        out = []
        for plan in plans:
            instance_id = plan.instance_id or str(uuid.uuid4())
            ports = allocate_ports(uow, self.store, self.rng, instance_id, plan, used, now)
            spec = InstanceSpec(
                image_id=plan.image.id,
                flavor=plan.flavor,
                ports=ports,
                config_drive=plan.config_drive,
                watchdog=plan.watchdog,
                migration=plan.migration,
                vnf_id=vnf_id,
                vdu=plan.vdu,
                sal=plan.sal,
                priority=plan.priority,
                groups=plan.groups,
                metadata=dict(plan.metadata),
                hints=dict(plan.hints),
                preemptible=plan.preemptible,
                recovery=dict(plan.recovery),
                health_check=None if plan.health_check is None else dict(plan.health_check),
            )
            hints = {
                "different_host": resolve_hosts(uow, spec.hints.get("different_host")),
                "same_host": resolve_hosts(uow, spec.hints.get("same_host")),
            }
            try:
                placed = self.scheduler.place(
                    uow,
                    snap,
                    instance_id,
                    spec,
                    plan.image,
                    hints,
                    now,
                    plan.priority,
                    lambda hosts: self._victims(uow, hosts),
                    evict=functools.partial(self._evict, uow, done, by=plan),
                )
            except NoValidHost as exc:
                raise NoValidHost(f"{plan.name}: {exc.detail}") from None
            done.generations[placed.host] = placed.generation
            instance = Instance(
                id=instance_id,
                name=plan.name,
                spec=spec,
                status=InstanceStatus.BUILDING,
                created_at=now,
                updated_at=now,
                task_state=TaskState.SPAWNING,
                power=Power.RUNNING,
                host=placed.host,
                project=plan.project,
                key_name=plan.key_name,
                index=plan.index,
                notes=placed.notes,
            )
            uow.compute.add_instance(instance)
            uow.compute.add_action(InstanceAction(instance_id, "create", request_id, user, now))
            for note in placed.notes:
                if note.startswith("placed into the reserve"):  # policy: place with an alarm
                    self.alarm(
                        uow,
                        done,
                        [
                            instance_faults.raised(
                                instance,
                                InstanceFault.RESERVE_USED,
                                note,
                                now,
                                self.location(placed.host),
                            )
                        ],
                    )
            self.notify(uow, done, instance, f"created on {placed.host}", "create")
            out.append(instance)
        return out

    def _victims(self, uow: UnitOfWork, hosts: Sequence[str]) -> dict[str, list[Victim]]:
        """Instances that hold resources on these hosts and may be pre-empted."""
        out: dict[str, list[Victim]] = {}
        for host in hosts:
            for i in uow.compute.instances_of(host):
                if not i.spec.preemptible or i.status not in HOLDING:
                    continue
                f = i.spec.flavor
                out.setdefault(host, []).append(
                    Victim(i.id, i.name, i.spec.priority, f.vcpus, f.ram_mib, f.disk_gib)
                )
        return out

    def _evict(self, uow: UnitOfWork, done: Done, plan: PreemptionPlan, by: InstancePlan) -> None:
        for victim in plan.victims:
            self._preempt(uow, done, victim.instance_id, by.name, by.priority)

    def _preempt(
        self, uow: UnitOfWork, done: Done, instance_id: str, by: str, priority: int
    ) -> None:
        """Stop a lower-priority instance to make room: SHUTOFF with the reason, its claim
        given back; never deleted (started again when capacity returns)."""
        old = uow.compute.instance_for_update(instance_id)
        now = self.clock.now()
        why = (
            f"pre-empted by {by} (priority {priority} > {old.spec.priority}): "
            "started again when capacity returns"
        )
        new = old.evolve(
            now,
            status=InstanceStatus.SHUTOFF,
            task_state=None,
            power=Power.STOPPED,
            fault=Fault(409, why, now),
            notes=(*old.notes, PREEMPTED),
        )
        uow.compute.update_instance(old, new)
        held = uow.compute.release(old.id)
        if held is not None:
            done.generations[held[0]] = held[1]
        uow.compute.add_action(
            InstanceAction(
                old.id, "preempt", f"req-{uuid.uuid4()}", "scheduler", now, now, "success", why
            )
        )
        self.alarm(
            uow,
            done,
            [
                instance_faults.raised(
                    new, InstanceFault.PREEMPTED, why, now, self.location(old.host)
                )
            ],
        )
        self.notify(uow, done, new, why, "preempt")
        log.warning("instance %s %s", old.name, why)

    # -- requests on an instance --------------------------------------------------------
    def host_gone(self, host: str | None) -> bool:
        """A host that will never report on its instances again: none, fenced, removed."""
        if host is None:
            return True
        view = self.hosts().get(host)
        return view is None or view.health == "FENCED"

    def request(
        self,
        instance_id: str,
        what: instance_states.Request,
        user: str,
        if_match: str | None = None,
    ) -> Instance:
        gone = self.host_gone(self.store.compute.instance(instance_id).host)

        def work(uow: UnitOfWork, done: Done) -> Instance:
            now = self.clock.now()
            old = uow.compute.instance_for_update(instance_id)
            if if_match is not None and if_match.strip() not in (old.etag, "*"):
                raise PreconditionFailed(
                    f"If-Match {if_match} does not match the instance's ETag {old.etag}"
                )
            if what is instance_states.Request.DELETE and self.abandon is not None:
                self.abandon(uow, done, old, f"deleted by {user}")
                old = uow.compute.instance_for_update(instance_id)
            new = instance_states.request(old, what, now, host_gone=gone)
            uow.compute.update_instance(old, new)
            finished = now if new.status is InstanceStatus.DELETED else None
            uow.compute.add_action(
                InstanceAction(
                    instance_id,
                    what.value,
                    f"req-{uuid.uuid4()}",
                    user,
                    now,
                    finished,
                    "success" if finished else "in-progress",
                )
            )
            if new.status is InstanceStatus.DELETED:
                self.released(uow, done, new, "deleted")
            elif new.host is not None:
                done.generations[new.host] = uow.compute.bump(new.host)
            self.notify(uow, done, new, f"{what.value} requested by {user}", what.value)
            return new

        instance = self.run(work)
        log.info("instance %s: %s requested by %s", instance.name, what.value, user)
        return instance

    def released(self, uow: UnitOfWork, done: Done, instance: Instance, why: str) -> None:
        """A deleted instance gives back its claim and ports; its alarms are cleared."""
        held = uow.compute.release(instance.id)
        if held is not None:
            done.generations[held[0]] = held[1]
        uow.compute.release_ports(instance.id)
        self.alarm(
            uow,
            done,
            instance_faults.cleared(
                instance, self.clock.now(), why, self.location(instance.host), deleted=True
            ),
        )

    def delete_vnf(self, ref: str, user: str) -> Vnf:
        vnf = self.store.compute.vnf(ref)
        for instance in self.store.compute.instances(vnf_id=vnf.id):
            if instance.task_state is not TaskState.DELETING:
                self.request(instance.id, instance_states.Request.DELETE, user)
        self.run(lambda uow, done: uow.compute.delete_vnf(vnf.id))
        return vnf


def _resolve(lookup: Callable[[str], T], ref: str, where: str) -> T:
    try:
        return lookup(ref)
    except NotFound as exc:
        raise InvalidInput(f"{where}: {exc.detail}") from None
