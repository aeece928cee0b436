"""Fixtures of the contract suites: real backends."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, require_system
from tests.support.etcd import EtcdCluster, find_etcd
from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.ports.coordination import Coordination


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdCluster]:
    """A real 3-member etcd cluster on loopback, for the whole session."""
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    base = Path(tempfile.mkdtemp(prefix="vimha-etcd-"))
    cluster = EtcdCluster(base, [(free_port(), free_port()) for _ in range(3)])
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["etcd", "local"])
async def coord(request: pytest.FixtureRequest) -> AsyncIterator[Coordination]:
    """Each coordination driver in turn."""
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        c = open_coordination(cluster.url, SystemClock())
    else:
        c = open_coordination("local://", SystemClock())
    try:
        yield c
    finally:
        await c.close()
