"""Service-group declarations and the agent config that carries them: refused with a reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from vimha.agent.main import load_agent_config
from vimha.domain.errors import InvalidInput
from vimha.domain.groups import Policy
from vimha.groupspec import GroupConfig

PROCESS = {"type": "process", "command": ["sleep", "1000"]}


def group(**over: Any) -> dict[str, Any]:
    return {
        "name": "kv",
        "policy": "active-standby",
        "members": ["a", "b"],
        "address": "127.0.0.1:1",
        "handler": PROCESS,
        **over,
    }


@pytest.mark.parametrize(
    ("over", "complaint"),
    [
        ({"members": ["a", "a"]}, "unique"),
        ({"policy": "n-plus-m", "active": 2}, "M >= 1"),
        ({"lease": {"ttl": 1, "renew": 0.5, "demote_after": 2}}, "before its lease"),
        ({"mode": "cluster"}, "n-plus-m"),
        ({"handler": {"type": "magic"}}, "magic"),
        ({"handler": {"type": "haproxy", "frontends": []}}, "frontends"),
        ({"handler": {"type": "mariadb", "port": 3306, "databases": ["no;drop"]}}, "pattern"),
        ({"handler": {"type": "mariadb"}}, "port"),
        (
            {"handler": {"type": "mariadb", "port": 3306, "galera": {"port": 1, "ist_port": 1}}},
            "must differ",
        ),
        (  # not supported yet: refused, not accepted and then failing at the first SST
            {"handler": {"type": "mariadb", "port": 3306, "galera": {"sst_method": "mariabackup"}}},
            "rsync",
        ),
        (
            {
                "handler": {
                    "type": "haproxy",
                    "frontends": [{"group": "db", "bind": "h:1"}, {"group": "db", "bind": "h:2"}],
                }
            },
            "distinct names",
        ),
    ],
)
def test_bad_groups_are_refused(over: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        GroupConfig.model_validate(group(**over))


def test_a_quorum_cluster_is_all_active_with_quorum() -> None:
    cfg = GroupConfig.model_validate(
        group(policy="n-plus-m", mode="cluster", members=["a", "b", "c"])
    )
    policy = cfg.group_policy()
    assert policy.policy is Policy.ALL_ACTIVE and policy.quorum


KEEPALIVED = {"type": "keepalived", "interface": "mgmt", "vip": "10.100.1.250/24"}


def agent(tmp_path: Path, **over: Any) -> Path:
    doc = {
        "node": "a",
        "key": "k" * 16,
        "planes": [{"name": "mgmt", "local": "127.0.0.1", "controller": "127.0.0.1:1"}],
        **over,
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize(
    ("over", "complaint"),
    [
        ({"groups": [group()]}, "coordination_url"),
        (
            {"groups": [group(members=["b", "c"])], "coordination_url": "local:///x.db"},
            "not a member",
        ),
        ({"groups": [group(), group()], "coordination_url": "local:///x.db"}, "unique"),
        ({"groups": [group()], "coordination_url": "local://"}, "one process"),
        (
            {
                "groups": [group(name="vip", handler=KEEPALIVED | {"track": "lb"}), group()],
                "coordination_url": "local:///x.db",
            },
            "track: lb is not another group of this node",
        ),
        (
            {
                "groups": [group()],
                "coordination_url": "etcd://h:2379?user=u&password_file=/nonexistent/pw",
            },
            "agent config: coordination url: password_file /nonexistent/pw of etcd user u",
        ),
        (
            {"groups": [group()], "coordination_url": "etcd://h:2379?user=u&password=x"},
            "unknown parameter password",
        ),
    ],
)
def test_agent_configs_with_bad_groups_are_refused(
    tmp_path: Path, over: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidInput, match=complaint):
        load_agent_config(agent(tmp_path, **over))


def test_a_good_agent_config_with_groups_loads(tmp_path: Path) -> None:
    cfg = load_agent_config(agent(tmp_path, groups=[group()], coordination_url="local:///x.db"))
    assert cfg.groups[0].name == "kv"
    tracking = group(name="vip", handler=KEEPALIVED | {"track": "kv"})
    cfg = load_agent_config(
        agent(tmp_path, groups=[tracking, group()], coordination_url="local:///x.db")
    )
    assert cfg.groups[0].handler.type == "keepalived"
