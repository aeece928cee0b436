"""Fixtures of the contract suites: real backends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.etcd import EtcdCluster
from vimha.drivers.clock import SystemClock
from vimha.drivers.coordination import open_coordination
from vimha.ports.coordination import Coordination


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
