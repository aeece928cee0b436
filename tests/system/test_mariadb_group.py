"""A MariaDB active-standby group run by three real agents (issue 5, ARCH-3/ARCH-4): GTID
replication with semi-synchronous commits. The primary is killed (-9), then the next one is
frozen (SIGSTOP); a client writes all along. No acknowledged commit is lost, the freshest
replica is promoted with a new epoch that clients can read in `vimha.epoch`, there is never
more than one writable primary, and the failed members come back as replicas."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from tests.conftest import require_system
from tests.support.agent_group import AgentGroup, DbClient, running_group, until

NODES = ("my-1", "my-2", "my-3")


def connect(address: str) -> Any:
    host, _, port = address.rpartition(":")
    return pymysql.connect(
        host=host, port=int(port), user="vimha", autocommit=True, connect_timeout=2,
        read_timeout=5, write_timeout=5,
    )  # fmt: skip


MY = DbClient(
    connect=connect,
    errors=(pymysql.MySQLError,),
    prepare=(
        "CREATE DATABASE IF NOT EXISTS app",
        "CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY)",
    ),
    insert="INSERT INTO app.t VALUES (%s)",
    is_writable="SELECT @@read_only = 0",
    epoch="SELECT epoch FROM vimha.epoch",
)


def my_group(**handler: Any) -> Iterator[AgentGroup]:
    require_system(shutil.which("mariadbd") is not None, "MariaDB (apt: mariadb-server)")
    yield from running_group(
        "vimha-my-",
        NODES,
        lambda port: {"type": "mariadb", "port": port, "fsync": False, **handler},
    )


@pytest.fixture
def group() -> Iterator[AgentGroup]:
    yield from my_group()


@pytest.fixture
def slow_group() -> Iterator[AgentGroup]:
    """Replicas given 20 s to receive before they count as unable to follow: time for a test
    to set a fork up."""
    yield from my_group(stream_grace=20.0)


def replicas_refuse_writes(g: AgentGroup) -> None:
    """Every member but the active refuses a client's write (read_only binds the clients'
    account too: it is how a replica, or a primary being fenced, stays out of the way)."""
    active = until(g.active)
    until(lambda: MY.writable(g) == 1, 30)  # the epoch written: replicated everywhere
    for node, port in g.ports.items():
        if node == active["member"]:
            continue
        conn = connect(f"127.0.0.1:{port}")
        try:
            with pytest.raises(pymysql.MySQLError, match="read-only"):
                MY.run(conn, "INSERT INTO vimha.epoch VALUES (0)")
        finally:
            conn.close()


def test_primary_killed_then_frozen_nothing_acknowledged_is_lost(group: AgentGroup) -> None:
    until(group.settled, 120)
    replicas_refuse_writes(group)
    acked, _, after = MY.write_through(group, signal.SIGKILL)
    MY.check_nothing_lost(acked, after, "app.t")
    until(group.settled, 120)  # every member back, one primary, two replicas

    acked2, _, after2 = MY.write_through(group, signal.SIGSTOP)
    MY.check_nothing_lost(acked + acked2, after2, "app.t")
    assert after2["epoch"] > after["epoch"]
    until(group.settled, 120)
    assert MY.writable(group) == 1
    replicas_refuse_writes(group)


def test_a_replica_behind_in_applying_is_promoted_with_everything_it_received(
    group: AgentGroup,
) -> None:
    """Commits are acknowledged once a replica received them, maybe long before it applies
    them (a replica replaying a whole history after a wipe): the promotion applies all of it
    first, never discards it."""
    until(group.settled, 120)
    replicas_refuse_writes(group)
    active = until(group.active)
    lagging, other = sorted(n for n in NODES if n != active["member"])
    members = group.members()
    conn = connect(f"127.0.0.1:{group.ports[lagging]}")
    try:
        MY.run(conn, "STOP SLAVE SQL_THREAD")  # receives, does not apply
    finally:
        conn.close()
    os.kill(int(members[other]["agentPid"]), signal.SIGSTOP)  # out of the running
    try:
        primary = connect(active["address"])
        try:
            for sql in MY.prepare:
                MY.run(primary, sql)
            acked = list(range(1, 201))
            for i in acked:
                MY.run(primary, MY.insert, i)  # each acknowledged: received by `lagging`
        finally:
            primary.close()
        os.kill(int(active["pid"]), signal.SIGKILL)
        new = until(lambda: (a := group.active()) and a["member"] == lagging and a, 60)
        MY.check_nothing_lost(acked, new, "app.t")
    finally:
        os.kill(int(members[other]["agentPid"]), signal.SIGCONT)
    until(group.settled, 120)


def rows(address: str) -> int:
    conn = connect(address)
    try:
        return int(MY.run(conn, "SELECT COUNT(*) FROM app.t")[0][0])
    finally:
        conn.close()


def rows_if_up(address: str) -> int | None:
    """rows(), or None while the member does not answer (restarting, say)."""
    try:
        return rows(address)
    except MY.errors:
        return None


def slave_status(address: str) -> dict[str, Any]:
    conn = connect(address)
    try:
        with conn.cursor(pymysql.cursors.DictCursor) as cur:
            cur.execute("SHOW SLAVE STATUS")
            return dict(cur.fetchone() or {})
    finally:
        conn.close()


def test_a_replica_that_asks_a_promoted_primary_too_early_asks_again(group: AgentGroup) -> None:
    """Replicas follow a new primary as soon as it holds the slot, while it may still be
    applying what it received. A replica further on than what the new primary has written
    yet is refused (error 1236), which MariaDB treats as final: its receiver stops for good,
    and the new primary's semi-synchronous commits wait for another replica. The replica asks
    again until the promotion is done."""
    until(group.settled, 120)
    replicas_refuse_writes(group)
    active = until(group.active)
    fresh, behind = sorted(n for n in NODES if n != active["member"])
    addr = {n: f"127.0.0.1:{group.ports[n]}" for n in NODES}
    lock = connect(addr[fresh])
    primary = connect(active["address"])
    try:
        MY.run(lock, "STOP SLAVE SQL_THREAD")  # `fresh` receives, does not apply
        for sql in MY.prepare:
            MY.run(primary, sql)
        for i in range(1, 101):
            MY.run(primary, MY.insert, i)  # `behind` applies these
        until(lambda: rows(addr[behind]) == 100, 30)
        conn = connect(addr[behind])
        MY.run(conn, "STOP SLAVE IO_THREAD")  # receives no more: `fresh` is the freshest
        conn.close()
        for i in range(101, 201):
            MY.run(primary, MY.insert, i)  # acknowledged once `fresh` received it
        MY.run(lock, "FLUSH TABLES WITH READ LOCK")  # its applier, once started, waits
    finally:
        primary.close()
    os.kill(int(active["pid"]), signal.SIGKILL)
    try:
        # `behind` follows `fresh` and asks for what comes after its 100th: not written yet
        until(lambda: slave_status(addr[behind]).get("Last_IO_Errno") == 1236, 30)
    finally:
        lock.close()  # the promotion goes on: `fresh` applies, writes, becomes the primary
    until(lambda: (a := group.active()) and a["member"] == fresh, 60)
    until(lambda: rows(addr[behind]) == 200, 30)
    assert slave_status(addr[behind])["Slave_IO_Running"] == "Yes"
    until(group.settled, 120)


def test_replicas_whose_history_forked_off_replay_it_afresh(slow_group: AgentGroup) -> None:
    """A replica that received transactions the new primary never had (the one promoted was
    behind it: the others were out of the running at the time) cannot follow it: it asks for
    what comes after its last GTID, the primary has no such thing (error 1236, for ever), and
    the primary's semi-synchronous commits wait for a replica that never comes, while the
    replica looked healthy. It is found out (it receives nothing from a primary that
    answers), wiped and replays the primary's history; nothing acknowledged is lost."""
    group = slow_group
    until(group.settled, 120)
    replicas_refuse_writes(group)
    old = until(group.active)
    ahead, promoted = sorted(n for n in NODES if n != old["member"])
    addr = {n: f"127.0.0.1:{group.ports[n]}" for n in NODES}
    acked = list(range(1, 21))
    primary = connect(old["address"])
    try:
        for sql in MY.prepare:
            MY.run(primary, sql)
        for i in acked:
            MY.run(primary, MY.insert, i)  # both replicas receive these
        until(lambda: rows(addr[promoted]) == 20, 30)
        conn = connect(addr[promoted])
        MY.run(conn, "STOP SLAVE IO_THREAD")  # `promoted` receives no more
        conn.close()
        for i in range(100, 150):
            MY.run(primary, MY.insert, i)  # only `ahead` and the old primary have these
    finally:
        primary.close()
    until(lambda: rows(addr[ahead]) == 70, 30)
    new = group.promote_the_one_behind(old, ahead, promoted)
    for node in (ahead, old["member"]):  # both forked off: they replay the history afresh
        until(lambda n=node: rows_if_up(addr[n]) == 20, 120, group.members)
    until(group.settled, 60, group.members)
    MY.check_nothing_lost(acked, new, "app.t")
    assert MY.writable(group) == 1
