"""Shared fixtures. Tests that need a system component call `require_system`: it skips with
a reason on a machine without it, but fails when VIMHA_REQUIRE_SYSTEM is set (CI)."""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _pytest.reports import TestReport

from tests.support.consumer import ConsumerProcess
from tests.support.etcd import EtcdCluster, find_etcd
from tests.support.ports import free_port, share
from tests.support.postgres import PostgresServer, find_pg_bin
from tests.support.procs import digest
from tests.support.shared_tls import install as share_tls_context
from vimha.cloud.guest_image import GuestImageError
from vimha.cloud.guest_image import build as build_guest_image
from vimha.cloud.libvirtd import Libvirtd, find_libvirtd
from vimha.cloud.nodes import check_ports
from vimha.domain.errors import Permanent

share_tls_context()


def require_system(ok: bool, reason: str) -> None:
    if ok:
        return
    if os.environ.get("VIMHA_REQUIRE_SYSTEM"):
        pytest.fail(f"required system component missing: {reason}")
    pytest.skip(reason)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile` with the system tests that share the machine grouped
    (tests/support/xdist_groups.py)."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.support.xdist_groups import GroupedFileScheduling

    return GroupedFileScheduling(config, log)


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


__all__ = ["cloud_port", "free_port", "require_system"]


def cloud_port() -> int:
    """A base port for an embedded cloud, below the ephemeral range (32768+), where outgoing
    connections could take one of the ports the cloud needs after it was found free."""
    low, high = share()
    for _ in range(200):
        port = random.randrange(low, high - 340)  # its block: up to port + 332
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
    for attempt in range(3):  # a member that lost its port to another process: new ports
        cluster = EtcdCluster(base / str(attempt), [(free_port(), free_port()) for _ in range(3)])
        (base / str(attempt)).mkdir()
        try:
            cluster.start()
            break
        except RuntimeError:
            cluster.stop()
            if attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[Libvirtd]:
    """libvirtd + virtlogd for qemu:///system, started for the session (or the one already
    answering, left running)."""
    require_system(os.geteuid() == 0, "root (libvirtd, QEMU guests on bridges)")
    require_system(
        find_libvirtd() is not None,
        "libvirtd and QEMU (apt: libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86)",
    )
    require_system(
        importlib.util.find_spec("libvirt") is not None, "libvirt-python (pip, with libvirt-dev)"
    )
    logs = Path(tempfile.mkdtemp(prefix="vimha-libvirtd-"))
    daemon = Libvirtd(logs)
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="session")
def guest_image() -> Path:
    """The demo guest for QEMU (kernel+initrd bundle), built once into .vimha-cache/."""
    try:
        cache = (
            os.environ.get("VIMHA_CACHE") or Path(__file__).resolve().parents[1] / ".vimha-cache"
        )
        return build_guest_image(Path(cache))
    except GuestImageError as e:
        require_system(False, f"demo guest image: {e}")
        raise
