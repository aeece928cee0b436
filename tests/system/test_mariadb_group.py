"""A MariaDB active-standby group run by three real agents (issue 5, ARCH-3/ARCH-4): GTID
replication with semi-synchronous commits. The primary is killed (-9), then the next one is
frozen (SIGSTOP); a client writes all along. No acknowledged commit is lost, the freshest
replica is promoted with a new epoch that clients can read in `vimha.epoch`, there is never
more than one writable primary, and the failed members come back as replicas."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import require_system
from tests.support.agent_group import AgentGroup, DbClient, until

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


@pytest.fixture
def group() -> Iterator[AgentGroup]:
    require_system(shutil.which("mariadbd") is not None, "MariaDB (apt: mariadb-server)")
    base = Path(tempfile.mkdtemp(prefix="vimha-my-"))
    g = AgentGroup(base, NODES, lambda port: {"type": "mariadb", "port": port, "fsync": False})
    try:
        g.start_all()
        yield g
    finally:
        g.stop()
        shutil.rmtree(base, ignore_errors=True)


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
