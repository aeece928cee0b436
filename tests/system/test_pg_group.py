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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import require_system
from tests.support.agent_group import AgentGroup, DbClient, until
from tests.support.postgres import find_pg_bin

NODES = ("pg-1", "pg-2", "pg-3")


def connect(address: str) -> Any:
    host, _, port = address.rpartition(":")
    return psycopg.connect(
        host=host, port=int(port), user="postgres", dbname="postgres", autocommit=True,
        connect_timeout=2,
    )  # fmt: skip


PG = DbClient(
    connect=connect,
    errors=(psycopg.Error,),
    prepare=(
        "CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY)",
        "SET statement_timeout = 3000",
    ),
    insert="INSERT INTO t VALUES (%s)",
    is_writable="SELECT NOT pg_is_in_recovery()",
    epoch="SELECT epoch FROM vimha_epoch",
)


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


def test_primary_killed_then_frozen_nothing_acknowledged_is_lost(group: AgentGroup) -> None:
    """The freshest member is promoted: after a kill -9 that may be the old primary itself,
    restarted by its agent (it has every write); after a SIGSTOP its agent kills it and the
    freshest standby is promoted."""
    acked, _, after = PG.write_through(group, signal.SIGKILL)
    PG.check_nothing_lost(acked, after, "t")
    until(group.settled, 120)  # every member back, one primary, two standbys

    acked2, _, after2 = PG.write_through(group, signal.SIGSTOP)
    PG.check_nothing_lost(acked + acked2, after2, "t")
    assert after2["epoch"] > after["epoch"]
    until(group.settled, 120)
    assert PG.writable(group) == 1
