"""`vimha etcd-access` against a real etcd (issue 22: a credential per agent on real hosts):
the plan from the agents' configs, applied through the CLI; then each agent's URL, as the
CLI prints it, writes its own groups' keys and nothing of another's; run again it changes
nothing; bad input is refused with a sentence and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_system
from tests.support.etcd import EtcdMember, find_etcd
from vimha.drivers.coord_etcd import EtcdCoordination
from vimha.groupspec import groups_prefix
from vimha.ports.coordination import PermissionDenied

G = groups_prefix("vimha")


def vimha(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vimha", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def member(tmp_path: Path) -> Iterator[EtcdMember]:
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    m = EtcdMember(tmp_path / "etcd")
    (tmp_path / "etcd").mkdir()
    m.start()
    try:
        yield m
    finally:
        m.stop()


def agent_config(folder: Path, node: str, groups: dict[str, list[str]]) -> Path:
    config = {
        "node": node,
        "key": "k" * 16,
        "planes": [{"name": "mgmt", "local": "127.0.0.1", "controller": "127.0.0.1:9"}],
        "coordination_url": "etcd://127.0.0.1:2379",
        "groups": [
            {
                "name": name,
                "policy": "active-standby",
                "members": members,
                "address": f"127.0.0.1:{9000 + i}",
                "handler": {"type": "process", "command": ["sleep", "infinity"]},
            }
            for i, (name, members) in enumerate(sorted(groups.items()))
        ],
    }
    path = folder / f"{node}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def configs(tmp_path: Path) -> list[Path]:
    return [
        agent_config(tmp_path, "cmp-1", {"db": ["cmp-1", "cmp-2"]}),
        agent_config(tmp_path, "cmp-2", {"db": ["cmp-1", "cmp-2"], "mq": ["cmp-2", "cmp-3"]}),
        agent_config(tmp_path, "cmp-3", {"mq": ["cmp-2", "cmp-3"]}),
    ]


def test_the_plan_is_shown_without_a_cluster(configs: list[Path]) -> None:
    r = vimha("etcd-access", "plan", *map(str, configs), "--controllers", "ctl-1", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert [u["name"] for u in plan["users"]] == [
        "vimha.controller.ctl-1", "vimha.agent.cmp-1", "vimha.agent.cmp-2", "vimha.agent.cmp-3",
    ]  # fmt: skip
    role = next(r for r in plan["roles"] if r["name"] == "vimha.agent.cmp-3")
    assert [p["key"] for p in role["permissions"] if p["write"]] == [f"{G}mq/"]


async def test_applied_through_the_cli_each_agent_writes_only_its_groups(
    member: EtcdMember, configs: list[Path], tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    where = ("--passwords", str(secrets), "--node-folder", str(secrets))
    args = ("etcd-access", "apply", *map(str, configs), "--controllers", "ctl-1",
            "--etcd", member.url, *where)  # fmt: skip
    r = vimha(*args, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert "authentication enabled" in doc["changed"]
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in secrets.iterdir())
    assert oct(secrets.stat().st_mode & 0o777) == "0o700"
    cmp3 = EtcdCoordination(doc["urls"]["vimha.agent.cmp-3"])
    try:
        assert await cmp3.increment(f"{G}mq/epoch") == 1
        with pytest.raises(PermissionDenied):
            await cmp3.increment(f"{G}db/epoch")  # cmp-1's and cmp-2's group
        assert await cmp3.get(f"{G}mq/epoch") is not None  # it reads the prefix
    finally:
        await cmp3.close()
    again = vimha(*args)
    assert again.returncode == 0, again.stderr
    assert "authentication enabled" not in again.stdout
    assert "vimha.agent.cmp-2" in again.stdout  # the URLs each node uses


def test_bad_input_is_refused_with_a_reason(configs: list[Path], tmp_path: Path) -> None:
    stray = agent_config(tmp_path / "..", "cmp-9", {"db": ["cmp-1", "cmp-9"]})
    try:
        r = vimha("etcd-access", "plan", *map(str, configs), str(stray), "--controllers", "c")
        assert r.returncode == 2 and "group db: node cmp-9 declares other members" in r.stderr
        r = vimha("etcd-access", "plan", str(tmp_path / "none.yaml"), "--controllers", "c")
        assert r.returncode == 2 and "file not found" in r.stderr
        r = vimha("etcd-access", "plan", *map(str, configs), "--controllers", ",")
        assert r.returncode == 2 and "--controllers names no node" in r.stderr
        r = vimha("etcd-access", "apply", *map(str, configs), "--controllers", "c",
                  "--etcd", "http://x", "--passwords", str(tmp_path / "p"))  # fmt: skip
        assert r.returncode == 2 and "an etcd:// URL" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        os.unlink(stray)
