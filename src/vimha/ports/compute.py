"""The compute part of the state store (issue 14): catalog (flavors, images, networks,
ports, key pairs), VNFs, instances, their actions, compute hosts with their claims, console
tokens.

Contract for every driver:
- Writes happen in the store's unit of work (`UnitOfWork.compute`), in the same transaction
  as the notifications they cause.
- A claim is a compare-and-swap on the host's generation: `claim` raises ClaimConflict
  when the generation moved since the snapshot the decision was made on (another scheduler
  claimed meanwhile); the caller decides again on a fresh snapshot. Every claim, release
  and change of what a host should run bumps its generation (its agent watches it).
- An instance is updated only from the version it was read at (`update_instance` raises
  ClaimConflict otherwise): two controllers never overwrite each other's change.
- `add_instance` and `update_instance` journal the instance's status, power, host,
  incarnation and task state when they change, in the same transaction (ports/insight.py):
  the HA metrics are computed from that journal (issue 20).
- Addresses are unique per network and MACs everywhere (the store's indexes): a duplicate
  raises Temporary (retry with another address), never stores two.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from vimha.domain.affinity import PlacementGroup
from vimha.domain.compute import (
    Flavor,
    HostResources,
    Image,
    Instance,
    InstanceAction,
    Network,
    Port,
    Vnf,
    VnfOperation,
)
from vimha.domain.errors import Temporary


class ClaimConflict(Temporary):
    """A host's generation or an instance's version moved: decide again."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, retry_after=0.0)


class ComputeReads(Protocol):
    def flavors(self) -> list[Flavor]: ...

    def flavor(self, ref: str) -> Flavor:
        """By id or name; NotFound."""
        ...

    def images(self) -> list[Image]: ...

    def image(self, ref: str) -> Image:
        """By id, or by name when one image has it; NotFound."""
        ...

    def image_data(self, digest: str) -> Iterator[bytes]:
        """The image's bytes, chunk by chunk; NotFound."""
        ...

    def save_image_data(self, digest: str, chunks: Iterable[bytes]) -> int:
        """Store content under its digest (its own transaction; a no-op if present).
        Returns the number of chunks."""
        ...

    def networks(self) -> list[Network]: ...

    def network(self, ref: str) -> Network:
        """By id, name or subnet id; NotFound."""
        ...

    def ports(
        self, network_id: str | None = None, instance_id: str | None = None
    ) -> list[Port]: ...

    def port(self, port_id: str) -> Port: ...

    def vnfs(self) -> list[Vnf]: ...

    def marker(self) -> str:
        """Changes whenever a VNF or an instance is created, changed or deleted (the
        dashboard polls it)."""
        ...

    def vnf(self, ref: str) -> Vnf:
        """By id or name; NotFound."""
        ...

    def instances(
        self,
        host: str | None = None,
        vnf_id: str | None = None,
        deleted: bool = False,
    ) -> list[Instance]: ...

    def instance(self, instance_id: str) -> Instance:
        """NotFound (deleted ones are found too)."""
        ...

    def actions(self, instance_id: str) -> list[InstanceAction]: ...

    def hosts(self) -> dict[str, HostResources]: ...

    def reported(self, host: str) -> dict[str, object] | None:
        """What the host's agent last reported of the node (resources, console relay)."""
        ...

    def generations(self) -> dict[str, int]:
        """Each compute host's generation (what its agent watches)."""
        ...

    def keypairs(self) -> list[tuple[str, str, str, datetime]]:
        """(name, public key, fingerprint, created)."""
        ...

    def groups(self, vnf_id: str | None = None) -> list[PlacementGroup]: ...

    def group(self, ref: str) -> PlacementGroup:
        """By id, or by name when one group has it; NotFound."""
        ...

    def members(self, group_id: str) -> dict[str, str | None]:
        """The group's members (instances not deleted) and their hosts."""
        ...

    def sal_usage(self) -> dict[str, dict[str, tuple[int, int]]]:
        """host -> SAL -> (vCPUs, RAM MiB) its instances of that SAL hold."""
        ...

    def operations(self, vnf_id: str) -> list[VnfOperation]: ...

    def operation(self, op_id: str) -> VnfOperation: ...


@dataclass(frozen=True, slots=True)
class HostChanges:
    """What moved since a reader's known generations (`ComputeUnitOfWork.host_changes`)."""

    hosts: dict[str, HostResources]
    gone: frozenset[str]
    usage: dict[str, dict[str, tuple[int, int]]]  # host -> SAL -> (vCPUs, RAM MiB)
    unsettled: frozenset[str]  # written by this unit of work itself


class ComputeUnitOfWork(Protocol):
    def add_flavor(self, flavor: Flavor, now: datetime) -> None:
        """Conflict if the name is taken."""
        ...

    def delete_flavor(self, flavor_id: str) -> None: ...

    def add_image(self, image: Image) -> None: ...

    def update_image(self, image: Image) -> None: ...

    def delete_image(self, image_id: str) -> None: ...

    def add_network(self, network: Network) -> None:
        """Conflict if the name is taken."""
        ...

    def delete_network(self, network_id: str) -> None:
        """Conflict while it has ports."""
        ...

    def used_ips(self, network_id: str) -> set[str]: ...

    def add_port(self, port: Port, owned: bool, now: datetime) -> None: ...

    def bind_port(self, port_id: str, instance_id: str | None) -> Port:
        """Bind an unbound port (Conflict if bound elsewhere), or unbind (None)."""
        ...

    def release_ports(self, instance_id: str) -> list[Port]:
        """Delete the ports made for the instance, unbind the others; returns them."""
        ...

    def delete_port(self, port_id: str) -> None: ...

    def add_vnf(self, vnf: Vnf) -> None:
        """Conflict if its client token was used already (naming that VNF)."""
        ...

    def delete_vnf(self, vnf_id: str) -> None: ...

    def add_instance(self, instance: Instance) -> None: ...

    def instance_for_update(self, instance_id: str) -> Instance: ...

    def update_instance(self, old: Instance, new: Instance) -> None:
        """Only if the stored version is still `old.version`; ClaimConflict otherwise."""
        ...

    def instances_of(self, host: str) -> list[Instance]:
        """Not deleted, locked for this unit of work."""
        ...

    def vnf_instances(self, vnf_id: str) -> list[Instance]:
        """The VNF's instances not deleted, locked for this unit of work (what a
        disruption budget is checked on, issue 19)."""
        ...

    def hosts(self) -> dict[str, HostResources]:
        """The snapshot claims are decided on."""
        ...

    def host_changes(self, known: Mapping[str, int], usage: bool) -> HostChanges:
        """The hosts whose generation is not the one in `known` (all with `known`
        empty), the hosts of `known` gone, and the SAL usage of the hosts returned (if
        `usage`), as this transaction sees them: what a scheduler keeping its snapshot
        between units of work reads instead of every host (issue 15). The hosts this unit
        of work has written (their rows or their instances) are always returned, and named
        `unsettled`: not committed, they must not be kept beyond it."""
        ...

    def upsert_host(
        self, host: HostResources, reported: dict[str, object] | None, now: datetime
    ) -> int:
        """Capacity, ratios, traits, hypervisor of a host (usage untouched); created if
        new. Returns its generation (bumped)."""
        ...

    def claim(
        self, host: str, generation: int, instance_id: str, flavor: Flavor, now: datetime
    ) -> int:
        """Add the flavor's resources to the host's usage if its generation is still
        `generation`; returns the new one. ClaimConflict otherwise, Conflict if the host
        has no such capacity left (checked again here)."""
        ...

    def release(self, instance_id: str) -> tuple[str, int] | None:
        """Remove the instance's claim; returns (host, new generation), None if none."""
        ...

    def bump(self, host: str) -> int:
        """Something its agent must see changed: bump the host's generation."""
        ...

    def add_action(self, action: InstanceAction) -> int: ...

    def finish_action(
        self, instance_id: str, action: str | None, result: str, message: str, now: datetime
    ) -> None:
        """Finish the newest unfinished action (of that name, if given)."""
        ...

    def add_console_token(
        self, token_hash: str, instance_id: str, now: datetime, expires_at: datetime
    ) -> None: ...

    def take_console_token(self, token_hash: str, now: datetime) -> str:
        """The instance of a token not used and not expired, which is used up by this;
        NotFound otherwise (used, expired or forged: one answer for all three)."""
        ...

    def add_keypair(self, name: str, public_key: str, fingerprint: str, now: datetime) -> None: ...

    def delete_keypair(self, name: str) -> None: ...

    def add_group(self, group: PlacementGroup, now: datetime) -> None:
        """Conflict if the name is taken (within its VNF, or among standalone groups)."""
        ...

    def delete_group(self, group_id: str) -> None:
        """Conflict while it has members."""
        ...

    def memberships(
        self, group_ids: Iterable[str]
    ) -> dict[str, tuple[PlacementGroup, dict[str, str | None]]]:
        """Each group, locked for this unit of work, with its members and their hosts now:
        what a claim re-checks the hard rules on."""
        ...

    def sal_usage(self) -> dict[str, dict[str, tuple[int, int]]]:
        """host -> SAL -> (vCPUs, RAM MiB), as the reads' (inside this transaction)."""
        ...

    def join_group(self, group_id: str, instance_id: str, generation: int) -> int:
        """Add a member if the group's generation is still `generation` (ClaimConflict
        otherwise); returns the new generation."""
        ...

    def moved_in_groups(self, instance_id: str) -> None:
        """A member was placed again (recovery, migration): bump its groups' generations."""
        ...

    def leave_groups(self, instance_id: str) -> None: ...

    def add_operation(self, op: VnfOperation) -> None: ...

    def update_operation(self, op: VnfOperation) -> None: ...
