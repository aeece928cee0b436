"""Who may write what in etcd (issue 22): the plan from the nodes and their service groups."""

from __future__ import annotations

import pytest

from vimha.domain.errors import InvalidInput
from vimha.etcdaccess import (
    GroupAccess,
    access_plan,
    agent_user,
    controller_user,
    group_access,
    may_read,
    may_write,
)
from vimha.groupspec import GroupConfig, fenced_prefix, groups_prefix
from vimha.sdnkeys import sdn_prefix

V = "v1"
G = groups_prefix(V)
SDN = sdn_prefix(V)
PLAN = access_plan(
    V,
    agents=["ctl-1", "ctl-2", "ctl-3", "cmp-1", "cmp-2"],
    controllers=["ctl-1", "ctl-2", "ctl-3"],
    groups=[
        GroupAccess("db", ("ctl-1", "ctl-2", "ctl-3")),
        GroupAccess("lb", ("ctl-1", "ctl-2")),
        GroupAccess("lb2", ("cmp-2",)),  # a name that starts like another's
        GroupAccess("sdn", ("ctl-2", "ctl-3"), sdn=True),
    ],
    switches=["cmp-1", "cmp-2"],
)

# every key an agent writes in its own group (agent/groups.py, claims.py, the handlers)
OWN_GROUP_KEYS = ["epoch", "slots/0", "holder/0", "released/0", "members/ctl-3", "spec",
                  "initialize", "formed", "bootstrap", "rabbitmq/ctl-3",
                  "galera/ctl-3"]  # fmt: skip


@pytest.mark.parametrize("key", OWN_GROUP_KEYS)
def test_an_agent_writes_the_keys_of_its_groups(key: str) -> None:
    assert may_write(PLAN, agent_user(V, "ctl-3"), f"{G}db/{key}")


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ("ctl-3", f"{G}lb/slots/0"),  # a group it is not a member of
        ("ctl-3", f"{G}lb/members/ctl-3"),  # not even its own member record there
        ("ctl-1", f"{G}lb2/epoch"),  # lb/ is ctl-1's, lb2/ is not
        ("cmp-1", f"{G}db/holder/0"),
        ("ctl-1", f"{fenced_prefix(V)}cmp-1"),  # the controllers' fencing records
        ("ctl-1", f"/vimha/{V}/controllers/ctl-1"),
        ("ctl-1", f"{SDN}networks/n1"),  # the API's intents
        ("cmp-1", f"{SDN}hosts/cmp-2"),  # another node's switch
        ("ctl-1", f"{SDN}instances/ctl-1"),  # not a member of the SDN group
        ("ctl-2", f"{SDN}instances/ctl-3"),  # another instance
        ("ctl-1", f"/vimha/{V}/"),
        ("ctl-1", f"/vimha/{V}x/groups/lb/epoch"),  # another vim with a longer name
    ],
)
def test_an_agent_writes_nothing_else(node: str, key: str) -> None:
    assert not may_write(PLAN, agent_user(V, node), key)


@pytest.mark.parametrize(
    ("node", "key"),
    [
        ("cmp-1", f"{SDN}hosts/cmp-1"),  # its switch's registration
        ("ctl-2", f"{SDN}instances/ctl-2"),  # its SDN instance
        ("ctl-3", f"{SDN}masters/0000000000000001"),
        ("ctl-3", f"{SDN}switches/0000000000000001"),
        ("ctl-2", f"{G}sdn/epoch"),  # the SDN group's epochs
    ],
)
def test_an_agent_writes_its_switch_and_sdn_instance_keys(node: str, key: str) -> None:
    assert may_write(PLAN, agent_user(V, node), key)


@pytest.mark.parametrize(
    "key", [f"{G}lb/slots/0", f"{fenced_prefix(V)}cmp-1", f"{SDN}ports/p1", f"/vimha/{V}/x"]
)
def test_an_agent_reads_the_whole_prefix_and_no_other(key: str) -> None:
    user = agent_user(V, "cmp-1")
    assert may_read(PLAN, user, key)
    assert not may_read(PLAN, user, key.replace(f"/vimha/{V}/", "/vimha/other/"))


@pytest.mark.parametrize(
    "key", [f"{G}lb/slots/0", f"{fenced_prefix(V)}cmp-1", f"/vimha/{V}/singleton"]
)
def test_the_controllers_write_the_whole_prefix(key: str) -> None:
    for node in ("ctl-1", "ctl-3"):
        assert may_write(PLAN, controller_user(V, node), key)
    assert not may_write(PLAN, controller_user(V, "ctl-1"), "/vimha/other/x")
    assert not may_write(PLAN, controller_user(V, "cmp-1"), key)  # runs no controller


def test_every_node_has_a_user_and_role_of_its_own() -> None:
    agents = [u for u in PLAN.users if u.kind == "agent"]
    assert [u.node for u in agents] == ["ctl-1", "ctl-2", "ctl-3", "cmp-1", "cmp-2"]
    assert len({u.name for u in PLAN.users}) == len(PLAN.users) == 8
    assert all(u.roles == (u.name,) for u in agents)
    assert PLAN.user("ctl-2", "controller").name == "v1.controller.ctl-2"
    assert all(r.name.startswith(PLAN.managed) for r in PLAN.roles)
    assert all(u.name.startswith(PLAN.managed) for u in PLAN.users)
    with pytest.raises(InvalidInput, match="no controller user for node cmp-1"):
        PLAN.user("cmp-1", "controller")


@pytest.mark.parametrize(
    ("agents", "groups", "switches", "why"),
    [
        (["a"], [GroupAccess("g", ("a", "b"))], [], "group g: member b runs no agent"),
        (["a"], [], ["b"], "switch of b: the node runs no agent"),
        (["a", "a"], [], [], "a node is named twice"),
        (["a"], [GroupAccess("g", ("a",)), GroupAccess("g", ("a",))], [], "group is named"),
        (["a b"], [], [], "a name without spaces"),
    ],
)
def test_a_plan_that_cannot_hold_is_refused(
    agents: list[str], groups: list[GroupAccess], switches: list[str], why: str
) -> None:
    with pytest.raises(InvalidInput, match=why):
        access_plan(V, agents, [], groups, switches)


@pytest.mark.parametrize(
    ("handler", "sdn"),
    [
        ({"type": "process", "command": ["true"]}, False),
        ({"type": "sdn", "listen": "127.0.0.1:6653", "coordination_url": "etcd://h:1"}, True),
    ],
)
def test_a_groups_declaration_gives_its_access(handler: dict[str, object], sdn: bool) -> None:
    doc = {
        "name": "net",
        "policy": "active-standby",
        "members": ["a", "b"],
        "address": "127.0.0.1:1",
        "handler": handler,
    }
    assert group_access(GroupConfig.model_validate(doc)) == GroupAccess("net", ("a", "b"), sdn)
