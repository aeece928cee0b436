"""A PostgreSQL active-standby group run by three real agents (issue 4, ARCH-3/ARCH-4): the
primary is killed (-9), then the next one is frozen (SIGSTOP); a client writes all along.
No acknowledged commit is lost (commits wait for one standby), the freshest standby is
promoted with a new epoch that clients can read, there is never more than one primary, and
the failed members come back as standbys cloned from the new primary."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from tests.conftest import free_port, require_system
from tests.support.postgres import find_pg_bin
from tests.support.procs import stop_all
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_mirror import load_json
from vimha.drivers.coordination import open_coordination

NODES = ("pg-1", "pg-2", "pg-3")
PREFIX = "/vimha/vimha/groups/db/"


class PgGroup:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.url = f"local://{base / 'coord.db'}"
        self.ports = {n: free_port() for n in NODES}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        udp = free_port()
        for node in NODES:
            home = base / node
            home.mkdir(parents=True)
            config = {
                "node": node,
                "key": "k" * 16,
                "planes": [
                    {"name": "mgmt", "local": "127.0.0.1", "controller": f"127.0.0.1:{udp}"}
                ],
                "coordination_url": self.url,
                "run_dir": str(home / "run"),
                "log_level": "warning",
                "groups": [
                    {
                        "name": "db",
                        "policy": "active-standby",
                        "members": list(NODES),
                        "address": f"127.0.0.1:{self.ports[node]}",
                        "handler": {"type": "postgresql", "port": self.ports[node], "fsync": False},
                    }
                ],
            }
            (home / "agent.yaml").write_text(yaml.safe_dump(config))

    def start(self, node: str) -> None:
        log = (self.base / f"{node}.log").open("ab")
        self.procs[node] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vimha",
                "agent",
                "--config",
                str(self.base / node / "agent.yaml"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        stop_all(self.procs.values(), 20)

    def members(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            coord = open_coordination(self.url, SystemClock())
            try:
                _, entries = await coord.list(PREFIX + "members/")
                return {e.key.rsplit("/", 1)[1]: load_json(e) for e in entries}
            finally:
                await coord.close()

        return asyncio.run(read())

    def active(self) -> dict[str, Any] | None:
        found = [
            m for m in self.members().values() if m.get("role") == "active" and m.get("healthy")
        ]
        return found[0] if found else None


def until(pred: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)
    return result


@pytest.fixture
def group() -> Iterator[PgGroup]:
    require_system(find_pg_bin() is not None, "PostgreSQL server binaries (apt: postgresql)")
    base = Path(tempfile.mkdtemp(prefix="vimha-pg-"))
    os.chmod(base, 0o755)  # the postgres user reaches its data dirs below
    g = PgGroup(base)
    for node in NODES:
        g.start(node)
    try:
        until(lambda: sum(m.get("healthy", False) for m in g.members().values()) == 3, 120)
        yield g
    finally:
        g.stop()
        shutil.rmtree(base, ignore_errors=True)


def primaries(g: PgGroup) -> int:
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
    g: PgGroup, fault: signal.Signals
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


def check_nothing_lost(g: PgGroup, acked: list[int], after: dict[str, Any]) -> None:
    host, _, port = after["address"].rpartition(":")
    with psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres") as c:
        have = {r[0] for r in c.execute("SELECT id FROM t").fetchall()}
        (epoch,) = c.execute("SELECT epoch FROM vimha_epoch").fetchone()  # type: ignore[misc]
    assert set(acked) <= have, f"lost acknowledged commits: {sorted(set(acked) - have)[:10]}"
    assert epoch == after["epoch"]


def settled(g: PgGroup) -> bool:
    members = g.members().values()
    roles = sorted(str(m.get("role")) for m in members)
    return all(m.get("healthy") for m in members) and roles == ["active", "standby", "standby"]


def test_primary_killed_then_frozen_nothing_acknowledged_is_lost(group: PgGroup) -> None:
    """The freshest member is promoted: after a kill -9 that may be the old primary itself,
    restarted by its agent (it has every write); after a SIGSTOP its agent kills it and the
    freshest standby is promoted."""
    acked, _, after = write_through(group, signal.SIGKILL)
    check_nothing_lost(group, acked, after)
    until(lambda: settled(group), 120)  # every member back, one primary, two standbys

    acked2, _, after2 = write_through(group, signal.SIGSTOP)
    check_nothing_lost(group, acked2, after2)
    assert after2["epoch"] > after["epoch"]
    until(lambda: settled(group), 120)
    assert primaries(group) == 1
