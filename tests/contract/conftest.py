"""Fixtures of the contract suites: real backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import require_system
from tests.support.etcd import EtcdCluster, EtcdMember, find_etcd
from tests.support.postgres import PostgresServer
from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.drivers.etcd_access import apply_access
from vimha.etcdaccess import AccessPlan, EtcdRole, EtcdUser, Permission
from vimha.ports.coordination import Coordination


@pytest.fixture(scope="session")
def etcd_rbac(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One etcd member with authentication on, and the URL of a user that may read and
    write /test/ only: the suites hold with a token on every call (leases revoked, watches
    and all)."""
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    base = tmp_path_factory.mktemp("etcd-rbac")
    member = EtcdMember(base)
    member.start()
    try:
        user = "suite.agent.x"
        plan = AccessPlan(
            "suite",
            (EtcdUser(user, "x", "agent", (user,)),),
            (EtcdRole(user, (Permission("/test/", True, True),)),),
        )
        (base / "root.pw").write_text("root-pw\n")
        (base / "user.pw").write_text("user-pw\n")
        root = f"{member.url}?user=root&password_file={base / 'root.pw'}"
        with ThreadPoolExecutor(1) as pool:  # asked for from a running loop (`coord`)
            pool.submit(asyncio.run, apply_access(root, plan, {user: "user-pw"})).result()
        yield f"{member.url}?user={user}&password_file={base / 'user.pw'}"
    finally:
        member.stop()


@pytest.fixture(params=["etcd", "etcd-rbac", "local", "file"])
async def coord(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Coordination]:
    """Each coordination driver in turn (etcd also with authentication and RBAC on)."""
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        c = open_coordination(cluster.url, SystemClock())
    elif request.param == "etcd-rbac":
        c = open_coordination(request.getfixturevalue("etcd_rbac"), SystemClock())
    elif request.param == "file":
        c = open_coordination(f"local://{tmp_path}/coord.db", SystemClock())
    else:
        c = open_coordination("local://", SystemClock())
    try:
        yield c
    finally:
        await c.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store's URL on each backend: SQLite in the test's folder, a new database of
    the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.new_database()
