"""A partitioned active demotes itself (issue 4), with real links (root): two agents in two
network namespaces hold an active-standby group in a real etcd reached over the bridge. The
active's link is cut: unable to renew its lease, it stops its member before the lease can
lapse; the standby does not take over on the lapsed lease alone (the old active might still
serve: here nobody fenced it), so there is never more than one active. When the link comes
back, the old active writes the release it could not write, and the standby takes over."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, require_system
from tests.support.etcd import EtcdCluster, find_etcd
from tests.support.procs import alive, stop_all
from tests.system.test_embedded_cloud import until
from vimha.cloud import netns
from vimha.cloud.netns import Netns
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_mirror import load_json
from vimha.drivers.coordination import open_coordination

NODES = ("p1", "p2")
PREFIX = "/vimha/vimha/groups/solo/"


class Setup:
    def __init__(self, base: Path) -> None:
        self.net = Netns.for_port(free_port(), ("mgmt",))
        netns.create(self.net, list(NODES))
        self.etcd = EtcdCluster(
            base / "etcd", [(free_port(), free_port())], self.net.controller_address("mgmt")
        )
        (base / "etcd").mkdir()
        self.etcd.start()
        self.procs: list[subprocess.Popen[bytes]] = []
        for index, node in enumerate(NODES, start=1):
            address = self.net.node_address("mgmt", index)
            port = free_port()
            role = base / f"{node}.role"
            config: dict[str, Any] = {
                "node": node,
                "key": "k" * 16,
                "planes": [
                    {
                        "name": "mgmt",
                        "local": address,
                        "controller": f"{self.net.controller_address('mgmt')}:9",
                    }
                ],
                "coordination_url": self.etcd.url,
                "run_dir": str(base / node),
                "groups": [
                    {
                        "name": "solo",
                        "policy": "active-standby",
                        "members": list(NODES),
                        "address": f"{address}:{port}",
                        "handler": {
                            "type": "process",
                            "command": [
                                sys.executable,
                                "-m",
                                "vimha.cloud.demo_service",
                                "--host",
                                address,
                                "--port",
                                str(port),
                                "--role-file",
                                str(role),
                            ],
                            "check": "http",
                            "target": f"http://{address}:{port}/",
                            "promote": ["sh", "-c", f'echo "active $VIMHA_EPOCH" > {role}'],
                            "demote": ["sh", "-c", f"echo standby > {role}"],
                        },
                        "lease": {"ttl": 3, "renew": 0.25, "demote_after": 1.5},
                    }
                ],
            }
            path = base / f"{node}.yaml"
            path.write_text(yaml.safe_dump(config))
            log = (base / f"{node}.log").open("ab")
            argv = [*netns.exec_prefix(self.net, node), sys.executable, "-m", "vimha", "agent"]
            self.procs.append(
                subprocess.Popen(
                    [*argv, "--config", str(path)], stdout=log, stderr=subprocess.STDOUT
                )
            )

    def members(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            coord = open_coordination(self.etcd.url, SystemClock())
            try:
                _, entries = await coord.list(PREFIX)
                return {e.key[len(PREFIX) :]: load_json(e) for e in entries}
            finally:
                await coord.close()

        return asyncio.run(read())

    def close(self) -> None:
        stop_all(self.procs)
        self.etcd.stop()
        netns.destroy(self.net, list(NODES))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    require_system(netns.available() is None, f"netns: {netns.available()}")
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    s = Setup(tmp_path)
    try:
        yield s
    finally:
        s.close()


def test_a_cut_off_active_demotes_itself_and_nobody_takes_over_until_it_says_so(
    setup: Setup,
) -> None:
    slot = until(lambda: setup.members().get("slots/0"))
    until(lambda: sum(k.startswith("members/") for k in setup.members()) == 2)
    old = slot["member"]
    other = next(n for n in NODES if n != old)
    pid = int(setup.members()[f"members/{old}"]["pid"])
    assert alive(pid)
    netns.set_link(setup.net, old, "mgmt", up=False)
    cut = time.monotonic()
    until(lambda: not alive(pid), 10)  # stopped its own member: it cannot renew its lease
    assert time.monotonic() - cut < 3.0, "demoted only after its lease could have lapsed"
    # the lease lapses, but the standby does not take the slot: no release, no fencing
    time.sleep(4.0)
    keys = setup.members()
    assert "slots/0" not in keys or keys["slots/0"]["member"] == old
    assert "neither released it nor was fenced" in keys[f"members/{other}"]["decision"]
    netns.set_link(setup.net, old, "mgmt", up=True)
    new = until(lambda: (s := setup.members().get("slots/0")) and s["member"] == other and s)
    assert new["epoch"] > slot["epoch"]
