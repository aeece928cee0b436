"""A MariaDB Galera cluster of three run by real agents (issue 5, ARCH-5: the `mariadb`
handler in `cluster` mode), each in a network namespace of its own, with an HAProxy agent in
front (writes to one member at a time, reads to all) and a controller raising the group's
alarms. A client writes through the balancer all along. Faults are real: a member killed
(-9), a member frozen (SIGSTOP), a member cut off (its link goes down in its namespace), and
every agent killed one after the other (the cluster gone), then started again: the new
cluster is bootstrapped from the member with the highest committed position, and no
acknowledged write is lost anywhere."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import free_port, require_system
from tests.support.agent_group import AgentGroup, ClusterHarness, until
from tests.support.cluster_clients import MysqlWriter, mysql_query, stored_ids

NODES = ("gal-1", "gal-2", "gal-3")


def handler(port: int) -> dict[str, Any]:
    galera = {"port": free_port(), "ist_port": free_port(), "sst_port": free_port()}
    return {"type": "mariadb", "port": port, "fsync": False, "galera": galera}


@pytest.fixture
def cluster() -> Iterator[ClusterHarness]:
    require_system(shutil.which("mariadbd") is not None, "MariaDB (apt: mariadb-server)")
    require_system(Path("/usr/lib/galera/libgalera_smm.so").exists(), "Galera (apt: galera-4)")
    require_system(shutil.which("haproxy") is not None, "haproxy (apt: haproxy)")
    require_system(shutil.which("rsync") is not None, "rsync (apt: rsync)")
    require_system(os.geteuid() == 0, "root (each member in a network namespace)")
    g = ClusterHarness(
        Path(tempfile.mkdtemp(prefix="vimha-gal-")),
        NODES,
        handler=handler,
        policy={"policy": "n-plus-m", "mode": "cluster", "restart_backoff": 1.0},
        frontends=[
            {"group": "db", "name": "db-write", "balance": "one", "inter": 0.2},
            {"group": "db", "name": "db-read", "inter": 0.2},
        ],
    )
    with g.running():
        yield g


def all_have(g: AgentGroup, acked: list[int]) -> None:
    """Every member synced and holding every acknowledged id."""
    until(lambda: g.healthy() == list(NODES), 180)
    for node in NODES:
        address = f"{g.hosts[node]}:{g.ports[node]}"
        have = stored_ids(address)
        lost = sorted(set(acked) - have)
        assert not lost, f"{node} lacks acknowledged ids {lost[:10]}"


def let_go_before_rejoin(g: AgentGroup, node: str) -> bool | None:
    """In `node`'s server log, after its last eviction of a run: whether its evict list was
    cleared ("unevicting") before the view that counted three members again (None: it
    evicted nothing). A list still naming the evicted run held up that view change."""
    log = g.base / node / "run" / "mariadb-db-run" / "error.log"
    lines = log.read_text(errors="replace").splitlines()
    evictions = [i for i, line in enumerate(lines) if "Evicting node" in line]
    if not evictions:
        return None
    after = lines[evictions[-1] :]
    cleared = next((i for i, line in enumerate(after) if "unevicting" in line), None)
    full = next(
        (i for i, line in enumerate(after) if "primary = yes" in line and "memb_num = 3" in line),
        None,
    )
    return cleared is not None and (full is None or cleared < full)


def writer_member(g: AgentGroup) -> dict[str, Any]:
    """The member the write frontend sends to: the one answering with its own name."""
    name = mysql_query(g.lb["db-write"], "SELECT @@wsrep_node_name")[0][0]
    return g.members()[name]


def test_member_killed_then_frozen_then_cut_off_writes_go_on(cluster: ClusterHarness) -> None:
    g = cluster
    reads = {mysql_query(g.lb["db-read"], "SELECT @@wsrep_node_name")[0][0] for _ in range(9)}
    assert reads == set(NODES)  # reads go to every member
    with MysqlWriter(g.lb["db-write"]) as w:
        w.more(30)
        first = writer_member(g)
        os.kill(int(first["pid"]), signal.SIGKILL)
        w.more(30)
        assert writer_member(g)["member"] != first["member"]  # the writes moved
        # on its agent's word, not after evs.suspect_timeout of silence
        evicted = f"{first['member']}'s server is gone (its agent says so): evicted"
        until(lambda: any(evicted in (g.base / f"{n}.log").read_text() for n in NODES), 10)
        until(lambda: g.healthy() == list(NODES), 120)  # back by IST, restarted by its agent
        assert g.members()[first["member"]]["pid"] != first["pid"]
        survivors = [n for n in NODES if n != first["member"]]
        seen = {n: let_go_before_rejoin(g, n) for n in survivors}
        assert True in seen.values() and False not in seen.values(), seen

        frozen = writer_member(g)
        os.kill(int(frozen["pid"]), signal.SIGSTOP)
        w.more(30)
        until(lambda: g.healthy() == list(NODES), 120)  # the hung one killed and restarted

        cut = NODES[2]
        g.link(cut, up=False)
        until(lambda: cut not in g.healthy(), 30)
        until(
            lambda: (
                {"SERVICE_GROUP_PARTITIONED", "SERVICE_GROUP_REDUNDANCY_LOST"} <= set(g.alarms())
            ),
            30,
        )
        w.more(30)  # the other two keep the primary component
        assert g.members()[cut]["detail"].startswith("non-primary")  # it knows
        g.link(cut, up=True)
        until(lambda: g.healthy() == list(NODES), 120)  # merged back on its own
        w.more(10)
    all_have(g, w.acked)
    until(lambda: not g.alarms(), 30)


def test_cluster_stopped_is_bootstrapped_again_from_the_most_advanced(
    cluster: ClusterHarness,
) -> None:
    g = cluster
    history = cluster_history(g.lb["db-write"])
    with MysqlWriter(g.lb["db-write"]) as w:
        w.more(20)
        behind = NODES[0]
        g.procs[behind].kill()  # its agent, and with it its server
        w.more(20)  # gal-2 and gal-3 commit what gal-1 never had
        g.procs[NODES[1]].kill()  # gal-3 alone: a minority, it serves nothing
        until(lambda: "SERVICE_GROUP_DOWN" in g.alarms(), 30)
        with g.controller.client() as c:
            down = c.get(
                "/vimfm/v1/alarms",
                params={"filter": "(eq,faultType,SERVICE_GROUP_DOWN)"},
            ).json()
        g.procs[NODES[2]].kill()
    for node in NODES:
        g.procs[node].wait()
    assert w.acked
    g.start(behind)  # alone, it must not bootstrap: it may be behind
    time.sleep(8)
    assert not g.healthy()
    g.start(NODES[1])
    g.start(NODES[2])
    all_have(g, w.acked)
    until(lambda: not g.alarms(), 30)
    assert "quorum lost" in str(down[0]["faultDetails"]), down
    for node in NODES:  # the same cluster goes on (its members crashed: positions recovered)
        assert cluster_history(f"{g.hosts[node]}:{g.ports[node]}") == history, node


def cluster_history(address: str) -> str:
    """The cluster's state UUID: a bootstrap that lost its position would start a new one."""
    return str(mysql_query(address, "SHOW STATUS LIKE 'wsrep_cluster_state_uuid'")[0][1])
