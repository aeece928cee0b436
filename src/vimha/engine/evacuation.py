"""Nova's evacuate and a compute service forced down (issue 16), on vimha's recovery.

- Forcing a compute service down is OPNFV Doctor's inspector asking for a host to be taken
  out: vimha fences it through its BMC (power off, confirmed), then recovers its instances
  as for any failed host. A host without a BMC cannot be fenced: refused, with what to do.
- Evacuating an instance is the operator's word that its host is down (Nova's contract: the
  host must be down, and the caller vouches it is off). Refused while the host serves
  (unless vimha's recovery rebuilt it elsewhere lately: then it is done, answered as such);
  otherwise the host is recorded as confirmed off (manual fencing, if it was not fenced
  already) and the instance is rebuilt at once from its spec on another host: a new
  incarnation with the same ports and config drive. The host's other instances follow
  through the recovery loop, as after `vimha hosts confirm-down`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from vimha.domain.classification import FailureKind
from vimha.domain.compute import Instance, InstanceStatus
from vimha.domain.errors import Conflict, NotFound
from vimha.domain.fencing import FencePhase
from vimha.engine.compute import Done
from vimha.ports.store import UnitOfWork

if TYPE_CHECKING:
    from vimha.engine.runtime import Runtime

FORCED = "compute service forced down by "
RECENT = 600.0  # an evacuation asked after vimha recovered the instance: already done
SERVING = ("UP", "DEGRADED", "MAINTENANCE")
EPISODE = 120.0  # fencing records this close to the last one are of the same power-off


def force_down(rt: Runtime, host: str, user: str) -> None:
    """Fence `host` now (on the event loop): its instances are recovered once it is off."""
    health = rt.health
    if health is None or host not in health.hosts:
        raise NotFound(f"Compute host {host} could not be found.")
    fencer = health.fencer
    state = fencer.state(host)
    if state.phase in (FencePhase.IN_PROGRESS, FencePhase.CONFIRMED):
        return  # already being fenced, or off: nothing more to do
    if host not in fencer.bmcs:
        raise Conflict(
            f"host {host} has no BMC: vimha cannot fence it. Once it is off, confirm it "
            f"(vimha hosts confirm-down {host}, or evacuate its servers)"
        )
    fencer.force(host, FailureKind.COMPUTE_NODE_FAILURE, FORCED + user)


def forced_down(rt: Runtime, host: str, up: bool = False) -> bool:
    """Whether `host` was forced down and is being fenced or is off (`up`: heard again
    since, it serves). Any controller can tell: the fencing's record keeps the request."""
    health = rt.health
    if health is not None:
        state = health.fencer.state(host)
        if state.phase is FencePhase.IN_PROGRESS and state.detail.startswith(FORCED):
            return True
    if up:
        return False
    # every controller's fencer may have confirmed the same power-off: one episode
    records = rt.store.fence_records(host, limit=5)
    return any(
        r.result == FencePhase.CONFIRMED.value
        and r.detail.startswith(FORCED)
        and (records[0].finished_at - r.finished_at).total_seconds() < EPISODE
        for r in records
    )


def rebuild(rt: Runtime, instance_id: str, user: str, verb: str = "repair") -> Instance:
    """A new incarnation from the spec (fresh disk, the same ports and config drive) on the
    best host, its own included; a voluntary disruption, so within its VNF's budget."""

    def work(uow: UnitOfWork, done: Done) -> Any:
        inst = uow.compute.instance_for_update(instance_id)
        if inst.status is InstanceStatus.DELETED or inst.task_state is not None:
            raise Conflict(
                f"cannot {verb} instance {inst.name} while it is "
                f"{inst.task_state.value if inst.task_state else inst.status.value}"
            )
        rt.migrations.check_budget(uow, inst)  # a voluntary rebuild (issue 19)
        moved = rt.recovery.relocate(uow, done, inst, f"{verb} requested by {user}", exclude=False)
        return moved or uow.compute.instance_for_update(instance_id)

    out: Instance = rt.compute.run(work)
    return out


def _moved_lately(rt: Runtime, inst: Instance) -> bool:
    """Whether recovery (or an evacuation) rebuilt it elsewhere within RECENT seconds."""
    since = rt.clock.now() - timedelta(seconds=RECENT)
    return any(
        a.action in ("recover", "evacuate") and a.started_at >= since
        for a in rt.store.compute.actions(inst.id)
    )


def evacuate(rt: Runtime, instance_id: str, user: str) -> Instance:
    """Rebuild the instance on another host; its host must be down (see the module)."""
    inst = rt.store.compute.instance(instance_id)
    if inst.status is InstanceStatus.DELETED:
        raise NotFound(f"Instance {instance_id} could not be found.")
    host = inst.host
    if host is None:
        raise Conflict(f"Cannot 'evacuate' instance {instance_id}: it is on no host")
    states = rt.recovery_hosts()
    state = states.get(host)
    if state is None or state.health in SERVING:
        if _moved_lately(rt, inst):
            return inst  # vimha's recovery rebuilt it already: what evacuate asks is done
        raise Conflict(f"Compute service of {host} is still in use.")
    if not state.known_off:
        rt.confirm_down(host, user)

    def work(uow: UnitOfWork, done: Done) -> Any:
        current = uow.compute.instance_for_update(instance_id)
        if current.host != host or current.status is InstanceStatus.DELETED:
            return current  # recovered (or deleted) meanwhile: nothing left to do
        moved = rt.recovery.relocate(
            uow, done, current, f"evacuated from {host} by {user}", action="evacuate"
        )
        return moved or uow.compute.instance_for_update(instance_id)

    out: Instance = rt.compute.run(work)
    return out
