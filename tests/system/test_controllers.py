"""Several controllers (ARCH-1, issue 4's first step): two controller processes on one real
PostgreSQL and one real 3-member etcd cluster. The work that must run once (ageing) belongs
to the holder of a lease; when the holder is killed with SIGKILL the other controller takes
the role over with a higher epoch, and never are both holders."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.support.etcd import EtcdCluster
from tests.support.postgres import PostgresServer
from tests.system.conftest import ControllerProcess


def role(ctl: ControllerProcess) -> dict[str, Any]:
    with ctl.client() as c:
        found: dict[str, Any] = c.get("/vim/v1/status").json()["coordination"]
    return found


def test_one_controller_holds_the_singleton_work_and_another_takes_over(
    tmp_path: Path, postgres: PostgresServer, etcd: EtcdCluster
) -> None:
    url = postgres.new_database()
    coordination = {
        "url": etcd.url,
        "ttl": 1.0,
        "renew": 0.1,
        "demote_after": 0.6,
        "controllers": 2,
    }
    ctls = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        ctl = ControllerProcess(
            tmp_path / name,
            store_url=url,
            coordination=coordination,
            heartbeat={"listen": {"mgmt": f"127.0.0.1:{free_port()}"}},
        )
        ctls.append(ctl)
    ctls[0].migrate()
    for ctl in ctls:
        ctl.start()
    try:
        deadline = time.monotonic() + 15
        while sorted(role(c)["singletonRole"] for c in ctls) != ["FOLLOWER", "HOLDER"]:
            assert time.monotonic() < deadline, [role(c) for c in ctls]
            time.sleep(0.1)
        states = [role(c) for c in ctls]
        assert all(s["backend"] == "etcd" and s["distributed"] for s in states)
        holder = next(
            c for c, s in zip(ctls, states, strict=True) if s["singletonRole"] == "HOLDER"
        )
        other = next(c for c in ctls if c is not holder)
        epoch = next(s["epoch"] for s in states if s["singletonRole"] == "HOLDER")
        for _ in range(10):  # stable: exactly one holder
            assert [role(c)["singletonRole"] for c in ctls].count("HOLDER") == 1
            time.sleep(0.1)

        # A host declared through one controller's API is watched by the other too.
        host = {"name": "cmp-9", "key": "k" * 32, "location": {"rack": "r9"}}
        with holder.client() as c:
            assert c.post("/vim/v1/hosts", json=host).status_code == 201

        def watched(ctl: ControllerProcess) -> list[str]:
            with ctl.client() as c:
                return [h["id"] for h in c.get("/vim/v1/hosts").json()]

        deadline = time.monotonic() + 15
        while "cmp-9" not in watched(other):
            assert time.monotonic() < deadline, watched(other)
            time.sleep(0.1)
        with holder.client() as c:
            assert c.delete("/vim/v1/hosts/cmp-9").status_code == 204
        deadline = time.monotonic() + 15
        while "cmp-9" in watched(other):
            assert time.monotonic() < deadline
            time.sleep(0.1)

        assert holder.proc is not None
        holder.proc.send_signal(signal.SIGKILL)  # no resignation: the lease must expire
        holder.proc.wait(10)
        deadline = time.monotonic() + 10
        while role(other)["singletonRole"] != "HOLDER":
            assert time.monotonic() < deadline, role(other)
            time.sleep(0.1)
        assert role(other)["epoch"] > epoch
    finally:
        for ctl in ctls:
            ctl.stop()
