"""A PostgreSQL active-standby group run by three real agents (issue 4, ARCH-3/ARCH-4): the
primary is killed (-9), then the next one is frozen (SIGSTOP); a client writes all along.
No acknowledged commit is lost (commits wait for one standby), the freshest standby is
promoted with a new epoch that clients can read, there is never more than one primary, and
the failed members come back as standbys cloned from the new primary."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import require_system
from tests.support.agent_group import AgentGroup, until
from tests.support.postgres import find_pg_bin

NODES = ("pg-1", "pg-2", "pg-3")


@pytest.fixture
def group() -> Iterator[AgentGroup]:
    require_system(find_pg_bin() is not None, "PostgreSQL server binaries (apt: postgresql)")
    base = Path(tempfile.mkdtemp(prefix="vimha-pg-"))
    os.chmod(base, 0o755)  # the postgres user reaches its data dirs below
    g = AgentGroup(base, NODES, lambda port: {"type": "postgresql", "port": port, "fsync": False})
    try:
        g.start_all()
        yield g
    finally:
        g.stop()
        shutil.rmtree(base, ignore_errors=True)


def primaries(g: AgentGroup) -> int:
    count = 0
    for port in g.ports.values():
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=1
            ) as c:
                if not c.execute("SELECT pg_is_in_recovery()").fetchone()[0]:  # type: ignore[index]
                    count += 1
        except psycopg.Error:
            pass
    return count


def write_through(
    g: AgentGroup, fault: signal.Signals
) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
    before = until(g.active)
    acked: list[int] = []
    most = 0
    conn: psycopg.Connection[Any] | None = None
    address = None
    i = 0
    faulted_at = None
    after = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        i += 1
        try:
            if conn is None:
                active = g.active()
                if active is None:
                    raise psycopg.OperationalError("no active")
                address = active["address"]
                host, _, port = address.rpartition(":")
                conn = psycopg.connect(
                    host=host,
                    port=int(port),
                    user="postgres",
                    dbname="postgres",
                    autocommit=True,
                    connect_timeout=2,
                )
                conn.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)")
            conn.execute("SET statement_timeout = 3000")
            conn.execute("INSERT INTO t VALUES (%s)", (i,))
            acked.append(i)
        except psycopg.Error:
            if conn is not None:
                conn.close()
            conn = None
            time.sleep(0.05)
        if len(acked) == 30 and faulted_at is None:
            os.kill(int(before["pid"]), fault)
            faulted_at = time.monotonic()
        if i % 10 == 0:
            most = max(most, primaries(g))
        if faulted_at is not None and (now := g.active()) and now["epoch"] > before["epoch"]:
            after = now
            if len(acked) >= 60 and address == now["address"]:
                break
    assert after is not None, "no new active"
    if conn is not None:
        conn.close()
    assert most <= 1, "two primaries at once"
    return acked, before, after


def check_nothing_lost(g: AgentGroup, acked: list[int], after: dict[str, Any]) -> None:
    host, _, port = after["address"].rpartition(":")
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres") as c:
        have = {r[0] for r in c.execute("SELECT id FROM t").fetchall()}
        (epoch,) = c.execute("SELECT epoch FROM vimha_epoch").fetchone()  # type: ignore[misc]
    assert set(acked) <= have, f"lost acknowledged commits: {sorted(set(acked) - have)[:10]}"
    assert epoch == after["epoch"]


def test_primary_killed_then_frozen_nothing_acknowledged_is_lost(group: AgentGroup) -> None:
    """The freshest member is promoted: after a kill -9 that may be the old primary itself,
    restarted by its agent (it has every write); after a SIGSTOP its agent kills it and the
    freshest standby is promoted."""
    acked, _, after = write_through(group, signal.SIGKILL)
    check_nothing_lost(group, acked, after)
    until(group.settled, 120)  # every member back, one primary, two standbys

    acked2, _, after2 = write_through(group, signal.SIGSTOP)
    check_nothing_lost(group, acked2, after2)
    assert after2["epoch"] > after["epoch"]
    until(group.settled, 120)
    assert primaries(group) == 1
