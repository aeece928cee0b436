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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from tests.conftest import require_system
from tests.support.agent_group import AgentGroup, until

NODES = ("my-1", "my-2", "my-3")


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


def connect(address: str) -> Any:
    host, _, port = address.rpartition(":")
    return pymysql.connect(
        host=host, port=int(port), user="vimha", autocommit=True, connect_timeout=2,
        read_timeout=5, write_timeout=5,
    )  # fmt: skip


def writable(g: AgentGroup) -> int:
    count = 0
    for port in g.ports.values():
        try:
            conn = connect(f"127.0.0.1:{port}")
        except pymysql.MySQLError:
            continue
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@read_only")
                row = cur.fetchone()
                count += row is not None and row[0] == 0
        except pymysql.MySQLError:
            pass
        finally:
            conn.close()
    return count


def write_through(
    g: AgentGroup, fault: signal.Signals
) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
    before = until(g.active)
    acked: list[int] = []
    most = 0
    conn: Any = None
    address = None
    i = 1000 * before["epoch"]
    faulted_at = None
    after = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        i += 1
        try:
            if conn is None:
                active = g.active()
                if active is None:
                    raise pymysql.OperationalError("no active")
                address = active["address"]
                conn = connect(address)
                with conn.cursor() as cur:
                    cur.execute("CREATE DATABASE IF NOT EXISTS app")
                    cur.execute("CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY)")
            with conn.cursor() as cur:
                cur.execute("INSERT INTO app.t VALUES (%s)", (i,))
            acked.append(i)
        except pymysql.MySQLError:
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        if len(acked) == 30 and faulted_at is None:
            os.kill(int(before["pid"]), fault)
            faulted_at = time.monotonic()
        if i % 10 == 0:
            most = max(most, writable(g))
        if faulted_at is not None and (now := g.active()) and now["epoch"] > before["epoch"]:
            after = now
            if len(acked) >= 60 and address == now["address"]:
                break
    assert after is not None, "no new active"
    if conn is not None:
        conn.close()
    assert most <= 1, "two writable primaries at once"
    return acked, before, after


def check_nothing_lost(acked: list[int], after: dict[str, Any]) -> None:
    conn = connect(after["address"])
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM app.t")
            have = {r[0] for r in cur.fetchall()}
            epoch = None
            for _ in range(50):  # written in the background once a replica follows
                cur.execute("SELECT epoch FROM vimha.epoch")
                row = cur.fetchone()
                if row is not None and row[0] == after["epoch"]:
                    epoch = row[0]
                    break
                time.sleep(0.1)
    finally:
        conn.close()
    assert set(acked) <= have, f"lost acknowledged commits: {sorted(set(acked) - have)[:10]}"
    assert epoch == after["epoch"]


def test_primary_killed_then_frozen_nothing_acknowledged_is_lost(group: AgentGroup) -> None:
    acked, _, after = write_through(group, signal.SIGKILL)
    check_nothing_lost(acked, after)
    until(group.settled, 120)  # every member back, one primary, two replicas

    acked2, _, after2 = write_through(group, signal.SIGSTOP)
    check_nothing_lost(acked + acked2, after2)
    assert after2["epoch"] > after["epoch"]
    until(group.settled, 120)
    assert writable(group) == 1
