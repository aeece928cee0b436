"""Fixtures of the contract suites: real backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.etcd import EtcdCluster
from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.ports.coordination import Coordination


@pytest.fixture(params=["etcd", "local", "file"])
async def coord(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Coordination]:
    """Each coordination driver in turn."""
    if request.param == "etcd":
        cluster: EtcdCluster = request.getfixturevalue("etcd")
        c = open_coordination(cluster.url, SystemClock())
    elif request.param == "file":
        c = open_coordination(f"local://{tmp_path}/coord.db", SystemClock())
    else:
        c = open_coordination("local://", SystemClock())
    try:
        yield c
    finally:
        await c.close()
