"""Nova's semantics over the compute service (issue 16): what the OpenStack Compute face
asks of the engine beyond what the native API does. The same units of work, the same
scheduler, claims and placement groups (`ComputeService.create_instances`): one code path,
two vocabularies.

- A server that no host can take is not refused: Nova answers 202 and the server goes to
  ERROR with the fault "No valid host was found. <reason>". So the server is stored in
  ERROR, with no host, no claim and no port, its `create` action failed with the reason,
  and it is a member of its server group all the same (as in Nova; a member without a host
  weighs on no domain).
- `min_count`..`max_count` servers in one request: as many as fit, at least `min_count`,
  all or nothing for each count tried.
- Server groups are placement groups (issue 15): a server names its group with the
  `group` scheduler hint and joins it in the claim's transaction.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import replace

from vimha.domain.compute import Fault, Instance, InstanceAction, InstanceSpec, InstanceStatus
from vimha.domain.errors import InvalidInput
from vimha.engine.compute import ComputeService, Done, InstancePlan, NoValidHost
from vimha.ports.store import UnitOfWork

log = logging.getLogger("vimha.servers")
NO_VALID_HOST = "No valid host was found."


class ServerService:
    def __init__(self, compute: ComputeService) -> None:
        self.compute = compute
        self.clock = compute.clock

    def create(
        self, plans: Sequence[InstancePlan], user: str, min_count: int = 1
    ) -> list[Instance]:
        """Create up to len(plans) servers, at least `min_count`. If not even `min_count`
        can be placed, every one of them is stored in ERROR with Nova's fault and returned
        all the same."""
        plans = [p if p.instance_id else replace(p, instance_id=str(uuid.uuid4())) for p in plans]
        reason = ""
        for n in range(len(plans), max(min_count, 1) - 1, -1):
            try:
                made = self.compute.create_instances(plans[:n], user)
            except NoValidHost as exc:
                reason = exc.detail
                continue
            log.info("%d server(s) created by %s", len(made), user)
            return made
        log.warning("servers not placed: %s", reason)
        return self.compute.run(lambda uow, done: self._unplaced(uow, done, plans, user, reason))

    def _unplaced(
        self,
        uow: UnitOfWork,
        done: Done,
        plans: Sequence[InstancePlan],
        user: str,
        reason: str,
    ) -> list[Instance]:
        now = self.clock.now()
        request_id = f"req-{uuid.uuid4()}"
        fault = Fault(500, nova_fault(reason), now, reason)
        groups = {g for p in plans for g in p.groups}
        held = uow.compute.memberships(groups) if groups else {}
        generations = {gid: group.generation for gid, (group, _) in held.items()}
        out = []
        for plan in plans:
            assert plan.instance_id is not None
            instance = Instance(
                id=plan.instance_id,
                name=plan.name,
                spec=_spec(plan),
                status=InstanceStatus.ERROR,
                created_at=now,
                updated_at=now,
                fault=fault,
                project=plan.project,
                key_name=plan.key_name,
                index=plan.index,
            )
            uow.compute.add_instance(instance)
            for gid in plan.groups:
                if gid in generations:
                    generations[gid] = uow.compute.join_group(gid, instance.id, generations[gid])
            uow.compute.add_action(
                InstanceAction(instance.id, "create", request_id, user, now, now, "error", reason)
            )
            self.compute.notify(uow, done, instance, f"not placed: {reason}", "create")
            out.append(instance)
        return out

    def rename(self, instance_id: str, name: str, user: str) -> Instance:
        if not name.strip():
            raise InvalidInput("name: must not be empty")

        def work(uow: UnitOfWork, done: Done) -> Instance:
            old = uow.compute.instance_for_update(instance_id)
            new = old.evolve(self.clock.now(), name=name)
            uow.compute.update_instance(old, new)
            self.compute.notify(uow, done, new, f"renamed from {old.name} by {user}")
            return new

        return self.compute.run(work)


def nova_fault(reason: str) -> str:
    """Nova's fault message for a server no host can take, with placement's reason:
    "No valid host was found. 4 candidate(s); Hints removed 4"."""
    _, _, why = reason.partition("No valid host was found")
    why = why.lstrip(":. ").strip()
    return f"{NO_VALID_HOST} {why}".strip()


def _spec(plan: InstancePlan) -> InstanceSpec:
    """The spec of a server that was never placed: no ports (none was allocated)."""
    return InstanceSpec(
        image_id=plan.image.id,
        flavor=plan.flavor,
        ports=(),
        config_drive=plan.config_drive,
        watchdog=plan.watchdog,
        migration=plan.migration,
        vdu=plan.vdu,
        sal=plan.sal,
        priority=plan.priority,
        groups=plan.groups,
        metadata=dict(plan.metadata),
        hints=dict(plan.hints),
        preemptible=plan.preemptible,
    )
