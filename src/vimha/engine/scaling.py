"""Scale-out and scale-in of a VNF's VDU (issue 15, VNF-9), and placement explained.

Each scale is an operation with a state (PROCESSING, COMPLETED, FAILED, as SOL 003's LCM
operation occurrences), stored and notified (VnfLcmOperationOccurrenceNotification).
Scale-out creates instances of the VDU in its groups, placed by the same scheduler as any
creation (a hard rule that cannot hold fails the operation with the reason); scale-in
removes the instances `domain/preemption.choose_scale_in` names: from the most crowded
domain of the VDU's group level first, the highest index first (so the spread is kept).
Both stay within the VDU's minCount and maxCount.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import replace
from typing import Any

from vimha.domain import instance_states
from vimha.domain.affinity import domain_of
from vimha.domain.budget import Disruption, DisruptionBudget, admits
from vimha.domain.clock import iso
from vimha.domain.compute import (
    ConfigDrive,
    Flavor,
    InstanceSpec,
    Sal,
    TaskState,
    Vdu,
    Vnf,
    VnfOperation,
)
from vimha.domain.errors import Conflict, VimhaError
from vimha.domain.placement import place
from vimha.domain.preemption import choose_scale_in
from vimha.domain.subscriptions import NotificationType, Subject
from vimha.engine.compute import ComputeService, Done
from vimha.engine.scheduler import resolve_hosts
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.scaling")


class Scaling:
    def __init__(self, compute: ComputeService) -> None:
        self.compute = compute
        self.store = compute.store
        self.clock = compute.clock

    def scale(self, vnf_ref: str, kind: str, vdu: Vdu, steps: int, user: str) -> VnfOperation:
        vnf = self.store.compute.vnf(vnf_ref)
        members = [
            i
            for i in self.store.compute.instances(vnf_id=vnf.id)
            if i.spec.vdu == vdu.name and i.task_state is not TaskState.DELETING
        ]
        op = VnfOperation(
            str(uuid.uuid4()),
            vnf.id,
            "SCALE",
            "PROCESSING",
            {"type": kind, "vdu": vdu.name, "steps": steps, "user": user},
            self.clock.now(),
        )
        self._record(op, vnf, add=True)
        try:
            if kind == "SCALE_OUT":
                result = self._out(vnf, vdu, members, steps, user)
            else:
                result = self._in(vnf, vdu, members, steps, user)
            done = replace(op, state="COMPLETED", result=result, finished_at=self.clock.now())
        except VimhaError as exc:
            done = replace(
                op, state="FAILED", result={"error": exc.detail}, finished_at=self.clock.now()
            )
        self._record(done, vnf)
        log.info(
            "VNF %s: %s of %s by %d: %s %s",
            vnf.name,
            kind,
            vdu.name,
            steps,
            done.state,
            done.result,
        )
        return done

    def _out(self, vnf: Vnf, vdu: Vdu, members: list[Any], steps: int, user: str) -> dict[str, Any]:
        if vdu.max_count is not None and len(members) + steps > vdu.max_count:
            raise Conflict(
                f"{vdu.name}: {len(members)} + {steps} instances exceed maxCount {vdu.max_count}"
            )
        groups = self._groups(vnf, vdu, members)
        start = (
            max(
                (
                    i.index
                    for i in self.store.compute.instances(vnf_id=vnf.id, deleted=True)
                    if i.spec.vdu == vdu.name
                ),
                default=-1,
            )
            + 1
        )
        plans = self.compute.plan_vdu(
            replace(vdu, count=steps),
            vnf.name,
            vnf.sal,
            vnf.priority,
            start,
            where=vdu.name,
            groups=groups,
            preemptible=vnf.preemptible,
        )
        created = self.compute.create_instances(plans, user, vnf.id)
        return {"added": [i.id for i in created], "count": len(members) + steps}

    def _in(self, vnf: Vnf, vdu: Vdu, members: list[Any], steps: int, user: str) -> dict[str, Any]:
        if len(members) - steps < vdu.min_count:
            raise Conflict(
                f"{vdu.name}: {len(members)} - {steps} instances fall below minCount "
                f"{vdu.min_count}"
            )
        level = self._level(members)
        hierarchy = self.compute.scheduler.hierarchy
        views = self.compute.scheduler.hosts()
        domains = {
            h: domain_of(dict(v.location.levels), level, hierarchy) or h for h, v in views.items()
        }
        chosen = choose_scale_in([(i.id, i.index, i.host) for i in members], steps, domains)
        # A scale-in is voluntary: the VNF's disruption budget must hold (issue 19, VNF-8).
        budget = DisruptionBudget.from_descriptor(vnf.descriptor)
        everyone = self.store.compute.instances(vnf_id=vnf.id)
        by_id = {i.id: i for i in everyone}
        for n, instance_id in enumerate(chosen):
            verdict = admits(budget, vnf.name, everyone, by_id[instance_id], Disruption.REMOVE, n)
            if not verdict.ok:
                raise Conflict(f"scale-in refused: {verdict.reason}")
        for instance_id in chosen:
            self.compute.request(instance_id, instance_states.Request.DELETE, user)
        return {"removed": chosen, "count": len(members) - steps}

    def _level(self, members: list[Any]) -> str:
        """The level of the VDU's first group with one (host otherwise)."""
        for i in members:
            for gid in i.spec.groups:
                return self.store.compute.group(gid).level
        return "host"

    def _groups(self, vnf: Vnf, vdu: Vdu, members: list[Any]) -> tuple[str, ...]:
        for i in members:
            return tuple(i.spec.groups)
        prefix = f"{vnf.name}-{vdu.name}-"
        own = [g.id for g in self.store.compute.groups(vnf.id) if g.name.startswith(prefix)]
        named = [self.store.compute.group(ref).id for ref in vdu.groups]
        return tuple(own + named)

    def _record(self, op: VnfOperation, vnf: Vnf, add: bool = False) -> None:
        base = self.compute.base_url

        def work(uow: UnitOfWork, done: Done) -> None:
            if add:
                uow.compute.add_operation(op)
            else:
                uow.compute.update_operation(op)
            payload = {
                "vnfLcmOpOccId": op.id,
                "operationState": op.state,
                "vnfInstanceId": vnf.id,
                "operation": op.operation,
                "isAutomaticInvocation": False,
                "operationParams": dict(op.params),
                "result": dict(op.result),
                "startTime": iso(op.started_at),
                "_links": {
                    "vnfInstance": {"href": f"{base}/vim/v1/vnfs/{vnf.id}"},
                    "vnfLcmOpOcc": {"href": f"{base}/vim/v1/vnf-operations/{op.id}"},
                },
            }
            subject = Subject(NotificationType.VNF_LCM_OPERATION, object_id=vnf.id)
            done.jobs += self.compute.faults.notify_in(
                uow, NotificationType.VNF_LCM_OPERATION, payload, subject, vnf.id
            )

        self.compute.run(work)

    def explain(
        self,
        flavor: Flavor,
        image_ref: str | None,
        sal: Sal,
        priority: int,
        groups: list[str],
        hints: dict[str, Any],
    ) -> dict[str, Any]:
        """Each filter's survivors and each weigher's score for a hypothetical request;
        nothing is claimed."""
        image = self.store.compute.image(image_ref) if image_ref else None
        hypervisor = image.properties.get("hypervisor_type") if image else None
        group_ids = tuple(self.store.compute.group(g).id for g in groups)
        spec = InstanceSpec(
            image.id if image else "",
            flavor,
            (),
            ConfigDrive(),
            sal=sal,
            priority=priority,
            groups=group_ids,
            hints=hints,
        )
        scheduler = self.compute.scheduler

        def work(uow: UnitOfWork, done: Done) -> dict[str, Any]:
            snap = scheduler.snapshot(uow)
            scheduler.load_groups(uow, snap, group_ids)
            resolved = {
                "different_host": resolve_hosts(uow, hints.get("different_host")),
                "same_host": resolve_hosts(uow, hints.get("same_host")),
            }
            guard = scheduler.guard(uow, snap)
            req = replace(
                scheduler.request(snap, spec, hypervisor, resolved),
                reserve=lambda h: guard.check(h, flavor, sal),
            )
            return place(req, list(snap.candidates.values()), snap.locations).explain()

        return self.compute.run(work)
