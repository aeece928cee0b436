"""Who may write what in etcd (issue 22: each node's agent holds a credential of its own), a
pure plan from the nodes and the service groups. etcd's RBAC grants roles key ranges, read
or read-write; a user holds roles. Under /vimha/<vim>/:

- each controller, user `<vim>.controller.<node>`, role `<vim>.controllers`: read-write the
  whole prefix (it writes the fencing records, the health judgments, the changes feed...);
- each node's agent, user and role `<vim>.agent.<node>`: read the whole prefix (its mirror
  watches it: the groups it balances or tracks, the fencing records), read-write only
  - `groups/<group>/` of each service group it is a member of (slots, epoch, holders,
    members, its handlers' claims and records: agent/groups.py, claims.py, the handlers);
  - `sdn/hosts/<node>`, its switch's registration, when it has one (agent/switch.py);
  - for a member of an SDN controller group (its instance runs with the node's credential):
    `sdn/instances/<node>` and the shared `sdn/masters/`, `sdn/switches/` (sdn/instance.py).

So a compromised node cannot move the roles of a group it is not a member of, nor forge
its members or another node's switch. Within a group the members trust each other (they
hand the role over to each other through the same keys).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from vimha.domain.errors import InvalidInput
from vimha.groupspec import GroupConfig, groups_prefix
from vimha.sdnkeys import sdn_prefix

ROOT = "root"  # etcd's: auth/enable needs it, with its role `root`
Kind = Literal["agent", "controller"]


@dataclass(frozen=True, slots=True)
class Permission:
    key: str
    prefix: bool  # every key under `key`; else that key only
    write: bool  # read-write; else read


@dataclass(frozen=True, slots=True)
class EtcdRole:
    name: str
    permissions: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class EtcdUser:
    name: str
    node: str
    kind: Kind
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class GroupAccess:
    """What the plan needs of a service group."""

    name: str
    members: tuple[str, ...]
    sdn: bool = False  # its members run SDN controller instances


@dataclass(frozen=True, slots=True)
class AccessPlan:
    vim: str
    users: tuple[EtcdUser, ...]
    roles: tuple[EtcdRole, ...]

    @property
    def managed(self) -> tuple[str, ...]:
        """The name prefixes of the users and roles this plan owns: one of those that the
        plan no longer names is removed (a node gone); others are left alone."""
        return (f"{self.vim}.agent.", f"{self.vim}.controller")

    def user(self, node: str, kind: Kind = "agent") -> EtcdUser:
        for u in self.users:
            if u.node == node and u.kind == kind:
                return u
        raise InvalidInput(f"etcd access: no {kind} user for node {node}")

    def role(self, name: str) -> EtcdRole:
        return next(r for r in self.roles if r.name == name)


def agent_user(vim: str, node: str) -> str:
    return f"{vim}.agent.{node}"


def controller_user(vim: str, node: str) -> str:
    return f"{vim}.controller.{node}"


def controllers_role(vim: str) -> str:
    return f"{vim}.controllers"


def group_access(group: GroupConfig) -> GroupAccess:
    return GroupAccess(group.name, group.members, group.handler.type == "sdn")


def _names(what: str, names: Iterable[str]) -> tuple[str, ...]:
    seen = tuple(names)
    for name in seen:
        if not name or any(c.isspace() for c in name):
            raise InvalidInput(f"etcd access: {what} {name!r}: a name without spaces")
    if len(set(seen)) != len(seen):
        raise InvalidInput(f"etcd access: a {what} is named twice")
    return seen


def access_plan(
    vim: str,
    agents: Iterable[str],
    controllers: Iterable[str],
    groups: Iterable[GroupAccess],
    switches: Iterable[str] = (),
) -> AccessPlan:
    """The users and roles of the nodes' agents (each node's, one), of the controllers (the
    control nodes'), from the service groups (their members) and the nodes that register a
    switch. InvalidInput names a group member or switch node that runs no agent."""
    if not vim or "/" in vim:
        raise InvalidInput(f"etcd access: vim {vim!r}")
    nodes = _names("node", agents)
    ctls = _names("controller", controllers)
    groups = tuple(groups)
    _names("group", (g.name for g in groups))
    switch_nodes = set(switches)
    for g in groups:
        for m in g.members:
            if m not in nodes:
                raise InvalidInput(f"etcd access: group {g.name}: member {m} runs no agent")
    if strays := sorted(switch_nodes - set(nodes)):
        raise InvalidInput(f"etcd access: switch of {strays[0]}: the node runs no agent")
    common, sdn = f"/vimha/{vim}/", sdn_prefix(vim)
    roles = [EtcdRole(controllers_role(vim), (Permission(common, True, True),))]
    users = [
        EtcdUser(controller_user(vim, c), c, "controller", (controllers_role(vim),)) for c in ctls
    ]
    for node in nodes:
        perms = [Permission(common, True, False)]
        mine = sorted((g for g in groups if node in g.members), key=lambda g: g.name)
        perms += [Permission(f"{groups_prefix(vim)}{g.name}/", True, True) for g in mine]
        if node in switch_nodes:
            perms.append(Permission(f"{sdn}hosts/{node}", False, True))
        if any(g.sdn for g in mine):
            perms += [
                Permission(f"{sdn}instances/{node}", False, True),
                Permission(f"{sdn}masters/", True, True),
                Permission(f"{sdn}switches/", True, True),
            ]
        name = agent_user(vim, node)
        roles.append(EtcdRole(name, tuple(perms)))
        users.append(EtcdUser(name, node, "agent", (name,)))
    return AccessPlan(vim, tuple(users), tuple(roles))


@dataclass(frozen=True, slots=True)
class AgentAccess:
    """What the plan needs of a node's agent (from its config)."""

    node: str
    groups: tuple[GroupAccess, ...] = ()
    switch: bool = False  # it registers its node's switch


def plan_for(vim: str, agents: Iterable[AgentAccess], controllers: Iterable[str]) -> AccessPlan:
    """The plan from the agents as configured: a group is declared by each of its members'
    agents, the same way (InvalidInput names one whose members differ)."""
    agents = tuple(agents)
    groups: dict[str, GroupAccess] = {}
    for agent in agents:
        for g in agent.groups:
            if groups.setdefault(g.name, g) != g:
                raise InvalidInput(
                    f"etcd access: group {g.name}: node {agent.node} declares other members "
                    f"({', '.join(g.members)} against {', '.join(groups[g.name].members)})"
                )
    switches = [a.node for a in agents if a.switch]
    return access_plan(vim, [a.node for a in agents], controllers, groups.values(), switches)


def may_write(plan: AccessPlan, user: str, key: str) -> bool:
    """Whether the plan lets `user` write `key` (as etcd would judge it)."""
    return _may(plan, user, key, write=True)


def may_read(plan: AccessPlan, user: str, key: str) -> bool:
    return _may(plan, user, key, write=False)


def _may(plan: AccessPlan, user: str, key: str, write: bool) -> bool:
    held = next((u.roles for u in plan.users if u.name == user), ())
    return any(
        (p.write or not write) and (key.startswith(p.key) if p.prefix else key == p.key)
        for r in plan.roles
        if r.name in held
        for p in r.permissions
    )
