"""Shared fixtures. Tests that need a system component call `require_system`: it skips with
a reason on a machine without it, but fails when VIMHA_REQUIRE_SYSTEM is set (CI)."""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.reports import TestReport

from tests.support.consumer import ConsumerProcess
from tests.support.etcd import EtcdCluster, find_etcd
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.procs import digest
from vimha.cloud.nodes import check_ports
from vimha.domain.errors import Permanent


def require_system(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("VIMHA_REQUIRE_SYSTEM"):
        pytest.fail(f"required system component missing: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> TestReport:
    """A test that fails while a cloud or an agent group is up keeps their logs (before the
    fixture's teardown removes them): the report names the copy. Rare failures need them."""
    report: TestReport = yield
    if report.failed and call.when == "call":
        for value in getattr(item, "funcargs", {}).values():
            keep = getattr(value, "keep_logs", None)
            if callable(keep):
                kept = keep()
                report.sections.append(("kept logs", f"logs kept in {kept}\n{digest(kept)}"))
    return report


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cloud_port() -> int:
    """A base port for an embedded cloud, below the ephemeral range (32768+), where outgoing
    connections could take one of the ports the cloud needs after it was found free."""
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            check_ports(port)
        except Permanent:
            continue
        return port
    raise RuntimeError("no free port block for an embedded cloud")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    require_system(find_pg_bin() is not None, "PostgreSQL server binaries (apt: postgresql)")
    # Not under pytest's tmp dir: that is root-only, and the server runs as `postgres`.
    base = Path(tempfile.mkdtemp(prefix="vimha-pg-"))
    server = PostgresServer(base, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def consumer(tmp_path: Path) -> Iterator[ConsumerProcess]:
    proc = ConsumerProcess(tmp_path / "received.jsonl", free_port())
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


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
