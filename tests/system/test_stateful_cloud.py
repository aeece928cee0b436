"""The VIM's stateful services in the embedded cloud (issue 5): `vimha up --netns --stateful`
runs a MariaDB pair (`sql`), a Galera cluster (`galera`) and a RabbitMQ cluster (`mq`) on the
three control nodes, behind the HAProxy pair and its virtual IP (root: every node in a network
namespace of its own). Clients write to all three through the VIP all along.

The node holding the MariaDB primary is cut off (both its links down in its namespace): the
controller fences it through its BMC, only then a replica is promoted (a new epoch), there is
never more than one writable primary, and writes to all three services go on through the
VIP. When the node comes back, it rejoins everywhere (its old primary as a replica), the
alarms clear, and no acknowledged write or confirmed message is lost anywhere."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import require_system
from tests.support.cluster_clients import (
    MysqlWriter,
    RabbitPublisher,
    drained,
    mysql_query,
    stored_ids,
)
from tests.support.procs import alive
from tests.system.test_embedded_cloud import Cloud, running_cloud, until
from vimha.cloud import netns, stateful
from vimha.cloud.chaos import group_members, load_state
from vimha.cloud.demo_groups import vip
from vimha.cloud.netns import Netns

GROUPS = ("sql", "galera", "mq")


@pytest.fixture
def cloud() -> Iterator[Cloud]:
    require_system(netns.available() is None, f"netns mode: {netns.available()}")
    require_system(not stateful.missing(), f"apt: {' '.join(stateful.missing())}")
    for tool in ("keepalived", "haproxy"):
        require_system(shutil.which(tool) is not None, f"{tool} (apt: {tool})")
    base = Path(tempfile.mkdtemp(prefix="vimha-stateful-"))
    base.chmod(0o755)  # the servers run as mysql and rabbitmq: they reach their data
    try:
        with running_cloud(base, "--netns", "--stateful", "--sdn", "off") as c:
            c.groups_ok(240)
            yield c
    finally:
        shutil.rmtree(base, ignore_errors=True)


def group(cloud: Cloud, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cloud.get(f"/vim/v1/service-groups/{name}")
    return found


def vip_address(cloud: Cloud, frontend: str) -> str:
    """The balancers' virtual IP, at the frontend's port."""
    net = load_state(cloud.data)["ctl-1"]["net"]
    address = vip(Netns(net["tag"], net["octet"], tuple(net["planes"])))
    return f"{address}:{stateful.frontend_port(int(cloud.url.rsplit(':', 1)[1]), frontend)}"


def writable(addresses: list[str]) -> list[str]:
    """The sql members that answer as writable primaries (read_only off)."""
    found = []
    for address in addresses:
        try:
            if mysql_query(address, "SELECT @@read_only")[0][0] == 0:
                found.append(address)
        except pymysql.MySQLError:
            continue
    return found


def test_the_primarys_node_cut_off_is_fenced_then_replaced_nothing_acknowledged_lost(
    cloud: Cloud,
) -> None:
    sql = group(cloud, "sql")
    addresses = [m["address"] for m in sql["members"]]
    old = next(m for m in sql["members"] if m["role"] == "active")
    old_epoch = max(a["epoch"] for a in sql["active"])
    assert writable(addresses) == [old["address"]]
    node = old["member"]
    published = {m["member"]: m for m in group_members(cloud.data, "sql")}
    old_pid = int(published[node]["pid"])
    with (
        MysqlWriter(vip_address(cloud, "sql")) as primary,
        MysqlWriter(vip_address(cloud, "galera-write")) as galera,
        RabbitPublisher(vip_address(cloud, "mq")) as mq,
    ):
        for client in (primary, galera, mq):
            client.more(30)
        cloud.chaos("plane-down", node, "mgmt")
        cloud.chaos("plane-down", node, "storage")
        most = 0

        def replaced() -> dict[str, Any] | None:
            nonlocal most
            most = max(most, len(writable(addresses)))
            now = group(cloud, "sql")
            active = [m for m in now["members"] if m["role"] == "active" and m["healthy"]]
            epochs = [a["epoch"] for a in now["active"]]
            ok = active and active[0]["member"] != node and max(epochs) > old_epoch
            return active[0] if ok else None

        new = until(replaced, 90)
        assert cloud.hosts()[node]["healthStatus"] == "FENCED"  # fenced before the promotion
        until(lambda: not alive(old_pid), 15)  # powered off: its server is gone
        for client in (primary, galera, mq):
            client.more(50)  # every service goes on through the VIP
        assert most <= 1, "two writable primaries at once"

        out = cloud.chaos("heal", node)
        assert "powered on" in out
        until(lambda: cloud.hosts()[node]["healthStatus"] == "UP", 90)
        cloud.groups_ok(240)
        assert writable(addresses) == [new["address"]]  # the old primary is a replica now
        for client in (primary, galera, mq):
            client.more(20)
    cloud.no_alarms(60)

    for address in addresses:  # replicas catch up with every acknowledged commit
        until(lambda address=address: not missing(address, primary.acked), 60)
    for member in group(cloud, "galera")["members"]:
        assert not missing(member["address"], galera.acked), member["member"]
    got = drained(vip_address(cloud, "mq"))
    assert not set(mq.acked) - got, "confirmed messages lost"


def missing(address: str, acked: list[int]) -> set[int]:
    return set(acked) - stored_ids(address)
