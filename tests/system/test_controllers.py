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
from tests.support.consumer import ConsumerProcess
from tests.support.etcd import EtcdCluster
from tests.support.postgres import PostgresServer
from tests.system.conftest import ControllerProcess
from tests.system.test_notification_delivery import alarm_objects, send_events, subscribe
from vimha.cloud.procs import AgentProcess


def role(ctl: ControllerProcess) -> dict[str, Any]:
    with ctl.client() as c:
        found: dict[str, Any] = c.get("/vim/v1/status").json()["coordination"]
    return found


def health(ctl: ControllerProcess, host: str) -> str | None:
    with ctl.client() as c:
        r = c.get(f"/vim/v1/hosts/{host}")
    return str(r.json()["healthStatus"]) if r.status_code == 200 else None


def two_controllers(
    tmp_path: Path, postgres: PostgresServer, etcd: EtcdCluster
) -> tuple[list[ControllerProcess], dict[str, str]]:
    """Two controllers on one PostgreSQL and one etcd, started, one of them the holder."""
    url = postgres.new_database()
    coordination = {
        "url": etcd.url,
        "ttl": 1.0,
        "renew": 0.1,
        "demote_after": 0.6,
        "controllers": 2,
    }
    ctls = []
    heard_at = {}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        heard_at[name] = f"127.0.0.1:{free_port()}"
        ctl = ControllerProcess(
            tmp_path / name,
            store_url=url,
            coordination=coordination,
            heartbeat={"listen": {"mgmt": heard_at[name]}, "startup_grace": 1},
            controller_name=f"ctl-{name}",
        )
        ctls.append(ctl)
    ctls[0].migrate()
    try:
        for ctl in ctls:
            ctl.start()
        deadline = time.monotonic() + 15
        while sorted(role(c)["singletonRole"] for c in ctls) != ["FOLLOWER", "HOLDER"]:
            assert time.monotonic() < deadline, [role(c) for c in ctls]
            time.sleep(0.1)
    except BaseException:
        for ctl in ctls:
            ctl.stop()
        raise
    return ctls, heard_at


def test_one_controller_holds_the_singleton_work_and_another_takes_over(
    tmp_path: Path, postgres: PostgresServer, etcd: EtcdCluster
) -> None:
    ctls, heard_at = two_controllers(tmp_path, postgres, etcd)
    try:
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

        # ... and an agent heartbeats to every controller: both see it UP.
        agent = AgentProcess(
            tmp_path,
            "cmp-9",
            host["key"],
            ("127.0.0.9", "127.0.0.9"),
            (0, 0),
            planes=[{"name": "mgmt", "local": "127.0.0.9", "controller": list(heard_at.values())}],
        )
        agent.start()
        try:
            for ctl in ctls:
                deadline = time.monotonic() + 15
                while health(ctl, "cmp-9") != "UP":
                    assert time.monotonic() < deadline, health(ctl, "cmp-9")
                    time.sleep(0.1)
        finally:
            agent.stop()
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


def test_a_killed_controllers_pending_notifications_are_delivered_by_another(
    tmp_path: Path, postgres: PostgresServer, etcd: EtcdCluster, consumer: ConsumerProcess
) -> None:
    """ARCH-1: each controller delivers what it stored (once: never both); the one killed
    with SIGKILL while its consumer was down loses nothing: the other adopts its pending
    notifications and delivers them in order."""
    ctls, _ = two_controllers(tmp_path, postgres, etcd)
    try:
        subscribe(ctls[0], consumer)
        # At once through the other controller: the subscription is matched already.
        send_events(ctls[1], 20, 200.0, "b")
        send_events(ctls[0], 20, 200.0, "a")
        got = consumer.wait_for(lambda got: len(alarm_objects(got)) >= 40)
        ids = [x["id"] for x in got if x["notificationType"] == "AlarmNotification"]
        assert len(ids) == len(set(ids)) == 40  # calm run: exactly once
        assert all(sorted(role(c)["controllers"]) == ["ctl-a", "ctl-b"] for c in ctls)

        consumer.kill()
        victim, survivor = ctls
        send_events(victim, 30, 300.0, "k")  # stored, not deliverable
        victim.kill()
        consumer.start()
        got = consumer.wait_for(
            lambda got: len([o for o in alarm_objects(got) if o[0] == "k"]) >= 30, timeout=30
        )
        assert [o for o in alarm_objects(got) if o[0] == "k"] == [f"k{i:05d}" for i in range(30)]
        deadline = time.monotonic() + 10
        while role(survivor)["controllers"] != ["ctl-b"]:
            assert time.monotonic() < deadline, role(survivor)
            time.sleep(0.1)
    finally:
        for ctl in ctls:
            ctl.stop()
