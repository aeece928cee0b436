"""Insight (issue 20) in-process: the API and the engine on a real SQLite store, hosts heard
through real heartbeats, agents played through the agents' API. Crashes on one host raise a
latent-hardware alarm with the crashes correlated; an outage of known length is measured;
a crash and a host failure each make one incident with its stages; rules are reloaded."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.component.compute_cloud import HOSTS, KEY, Cloud
from tests.component.conftest import ADMIN, OPERATOR, READER
from tests.component.test_compute_api import vnf
from tests.conftest import free_port
from vimha.api.app import create_app
from vimha.config import load
from vimha.controller import build_auth, open_store
from vimha.domain.incidents import Stage
from vimha.drivers.clock import SystemClock
from vimha.drivers.heartbeat_udp import HeartbeatSender, PlaneRoute
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.incidents import Subject
from vimha.engine.runtime import Runtime


class Insightful(Cloud):
    senders: dict[str, asyncio.Task[None]]
    stop: dict[str, asyncio.Event]
    down: set[str]

    async def until(self, check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            got = await check()
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s")
            await asyncio.sleep(0.1)

    async def crash(self, host: str, iid: str, incarnation: int = 1) -> None:
        self.down.add(iid)
        await self.report(
            host,
            [
                {
                    "id": i,
                    "incarnation": n,
                    "state": "CRASHED" if i in self.down else "RUNNING",
                    "rebooted": seq,
                }
                for i, n, seq in await self.running(host)
            ],
            events=[{"id": iid, "incarnation": incarnation, "kind": "CRASHED", "detail": "SEGV"}],
        )

    async def running(self, host: str) -> list[tuple[str, int, int]]:
        wanted = (await self.desired(host))["instances"]
        return [
            (i["id"], i["incarnation"], i["reboot"]["seq"])
            for i in wanted
            if i["power"] != "deleted"
        ]

    async def restart(self, host: str, iid: str) -> None:
        await self.ok("POST", f"/vim/v1/instances/{iid}/reboot", json={"type": "HARD"})
        self.down.discard(iid)
        await self.report(
            host,
            [
                {
                    "id": i,
                    "incarnation": n,
                    "state": "CRASHED" if i in self.down else "RUNNING",
                    "rebooted": seq,
                }
                for i, n, seq in await self.running(host)
            ],
        )

    async def silence(self, host: str) -> None:
        self.stop[host].set()
        with contextlib.suppress(asyncio.CancelledError):
            await self.senders[host]


@pytest.fixture
async def cloud(tmp_path: Path) -> AsyncIterator[Insightful]:
    port = free_port()
    rules = tmp_path / "rules.yaml"
    rules.write_text((Path(__file__).parents[2] / "src/vimha/correlation.yaml").read_text())
    config = load(
        None,
        {
            "store": {"url": f"sqlite:///{tmp_path / 'api.db'}"},
            "api": {"public_url": "http://vim.example"},
            "delivery": {"process": False},
            "heartbeat": {"listen": {"mgmt": f"127.0.0.1:{port}"}, "startup_grace": 1},
            "compute": {"cpu_allocation_ratio": 1.0},
            "hosts": [
                {"name": h, "key": KEY, "location": {"zone": "z1", "rack": f"r{n}"}}
                for n, h in enumerate(HOSTS)
            ],
            "correlation": {"interval": 0.1, "full_every": 1, "rules_file": str(rules)},
            "incidents": {"interval": 0.1, "settle": 0.3, "targets": {"total": 60}},
            "auth": {
                "tokens": [
                    {"name": "admin", "token": ADMIN, "role": "admin"},
                    {"name": "ops", "token": OPERATOR, "role": "operator"},
                    {"name": "ro", "token": READER, "role": "reader"},
                ]
            },
        },
    )
    store = open_store(config, migrate=True)
    runtime = Runtime(config, store, HttpNotifier(2, 2), SystemClock())
    app = create_app(runtime, build_auth(config))
    await runtime.start()

    stops = {h: asyncio.Event() for h in HOSTS}
    senders = {
        h: asyncio.create_task(
            HeartbeatSender(
                h, KEY.encode(), [PlaneRoute("mgmt", "127.0.0.1", ("127.0.0.1", port))], 0.05
            ).run(stops[h])
        )
        for h in HOSTS
    }
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://vim.example") as client:
        c = Insightful(client, runtime)
        c.senders, c.stop, c.down = senders, stops, set()
        c.rules_file = rules  # type: ignore[attr-defined]
        await c.until(lambda: _all_up(c))
        await c.until(lambda: _holds(runtime))
        for h in HOSTS:
            await c.report(h, [])
        await c.ok("POST", "/vim/v1/flavors", json={"name": "tiny", "vcpus": 1, "ramMib": 256})
        image = await c.ok(
            "POST",
            "/vim/v1/images",
            json={"name": "guest", "properties": {"hypervisor_type": "process"}},
        )
        await c.ok(
            "PUT",
            f"/vim/v1/images/{image['id']}/file",
            content=b"tar bytes",
            headers={"Content-Type": "application/octet-stream"},
        )
        await c.ok("POST", "/vim/v1/networks", json={"name": "vnf-a", "cidr": "10.9.0.0/24"})
        yield c
    for h in HOSTS:
        stops[h].set()
    for task in senders.values():
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await runtime.stop()
    store.close()


async def _holds(runtime: Runtime) -> bool:
    return runtime.holds_singleton()


async def _all_up(c: Cloud) -> bool:
    hosts = await c.ok("GET", "/vim/v1/hosts")
    return all(h["healthStatus"] == "UP" for h in hosts)


async def two_on(cloud: Insightful, host: str, name: str = "vfw") -> list[str]:
    created = await cloud.ok("POST", "/vim/v1/vnfs", json=vnf(name, count=2, hints={"host": host}))
    await cloud.run_all(host)
    return [i["id"] for i in created["instances"]]


async def alarms(cloud: Insightful, fault_type: str) -> list[dict[str, Any]]:
    return [
        a
        for a in await cloud.ok("GET", "/vimfm/v1/alarms", params={"all_fields": ""})
        if a["faultType"] == fault_type
    ]


async def test_instances_crashing_on_one_host_reveal_a_latent_hardware_fault(
    cloud: Insightful,
) -> None:
    i1, i2 = await two_on(cloud, "cmp-1")
    await cloud.crash("cmp-1", i1)
    await cloud.restart("cmp-1", i1)
    await cloud.crash("cmp-1", i1)
    await cloud.crash("cmp-1", i2)

    async def suspected() -> list[dict[str, Any]]:
        found = await alarms(cloud, "SUSPECTED_LATENT_HW_FAULT")
        return found if found and len(found[0]["correlatedAlarmIds"]) == 3 else []

    (suspect,) = await cloud.until(suspected)
    assert suspect["managedObjectId"] == "cmp-1" and suspect["isRootCause"] is True
    assert suspect["location"]["path"] == "z1/r0/cmp-1"
    history = await cloud.ok(
        "GET", "/vimfm/v1/alarms", params={"filter": "(eq,faultType,INSTANCE_CRASHED)"}
    )
    crashes = {
        a["id"]: a
        for a in [
            await cloud.ok("GET", f"/vimfm/v1/alarms/{i}") for i in suspect["correlatedAlarmIds"]
        ]
    }
    assert len(crashes) == 3 and {a["faultType"] for a in crashes.values()} == {"INSTANCE_CRASHED"}
    for a in crashes.values():
        assert a["isRootCause"] is False and a["correlatedAlarmIds"] == [suspect["id"]]
    assert len(history) == 2  # the two active crash alarms (the first one cleared)
    # one incident gathers the suspicion and the crashes that revealed it
    incidents = await cloud.until(
        lambda: _incidents(cloud, lambda i: i["kind"] == "ELEMENT" and len(i["alarmIds"]) == 4)
    )
    assert incidents[0]["subject"] == "cmp-1"
    assert {a["instanceId"] for a in incidents[0]["affectedInstances"]} == {i1, i2}


async def _incidents(cloud: Cloud, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    return [i for i in await cloud.ok("GET", "/vim/v1/incidents") if keep(i)]


async def test_an_outage_of_known_length_is_measured_and_is_one_incident(
    cloud: Insightful,
) -> None:
    i1, _ = await two_on(cloud, "cmp-2")
    t0 = time.monotonic()
    await cloud.crash("cmp-2", i1)
    t1 = time.monotonic()
    await asyncio.sleep(1.5)
    t2 = time.monotonic()
    await cloud.restart("cmp-2", i1)
    t3 = time.monotonic()
    got = await cloud.ok("GET", f"/vim/v1/metrics/instances/{i1}")
    (outage,) = got["outages"]
    assert t2 - t1 - 0.05 <= outage["durationSeconds"] <= t3 - t0 + 0.05
    assert outage["cause"].startswith("INSTANCE_CRASHED on ") and outage["source"] == "state"
    hour = got["windows"]["1h"]
    assert hour["failures"] == 1 and hour["outageSeconds"] == outage["durationSeconds"]
    assert 0 < hour["availability"] < 1 and hour["nines"] > 0
    assert hour["mttrSeconds"] == outage["durationSeconds"]
    (inc,) = await cloud.until(
        lambda: _incidents(cloud, lambda i: i["subject"] == i1 and i["state"] == "CLOSED")
    )
    shown = await cloud.ok("GET", f"/vim/v1/incidents/{inc['id']}")
    stages = [(e["stage"], e["object"]) for e in shown["timeline"] if e["stage"] != "alarm"]
    assert stages == [("detected", i1), ("booted", i1), ("serving", i1)]
    total = next(b for b in shown["budgets"] if b["stage"] == "total")
    assert total["seconds"] == pytest.approx(outage["durationSeconds"], abs=0.1)
    assert total["targetSeconds"] == 60 and total["over"] is False
    vnf_figures = await cloud.ok("GET", f"/vim/v1/metrics/vnfs/{got['vnfId']}")
    assert vnf_figures["service"]["windows"]["1h"]["outageSeconds"] == 0  # its twin served
    assert vnf_figures["instances"]["windows"]["1h"]["failures"] == 1
    summary = await cloud.ok("GET", "/vim/v1/metrics", params={"window": "1h"})
    assert [s["sal"] for s in summary["sals"]] == ["LEVEL_1"]
    assert summary["incidents"]["stages"]["total"]["count"] == 1
    host = await cloud.ok("GET", "/vim/v1/metrics/hosts/cmp-2")
    assert host["instanceFailures"]["1h"] == 1 and host["windows"]["1h"]["failures"] == 0
    prom = await cloud.call("GET", "/metrics")
    assert 'vimha_incident_stage_seconds_count{kind="INSTANCE",stage="total"}' in prom.text
    r = await cloud.call("GET", "/vim/v1/metrics", params={"window": "2w"})
    assert r.status_code == 400


async def test_a_host_failure_is_one_incident_and_recovery_reports_its_steps(
    cloud: Insightful,
) -> None:
    i1, i2 = await two_on(cloud, "cmp-2")
    await cloud.silence("cmp-2")
    inc = (
        await cloud.until(
            lambda: _incidents(cloud, lambda i: i["kind"] == "HOST" and i["subject"] == "cmp-2")
        )
    )[0]
    assert inc["title"] == "HOST_UNREACHABLE on cmp-2" and inc["state"] == "OPEN"
    assert {a["instanceId"] for a in inc["affectedInstances"]} == {i1, i2}
    incidents = cloud.runtime.insight.incidents
    for n, iid in enumerate((i1, i2)):
        await asyncio.to_thread(
            incidents.record, Subject.host("cmp-2"), Stage.PLACED, None, "on cmp-1", iid
        )
        await asyncio.to_thread(
            incidents.record, Subject.instance(iid), Stage.BOOTED, None, "", iid
        )
        await asyncio.to_thread(
            incidents.record, Subject.instance(iid), Stage.SERVING, None, f"answers {n}", iid
        )
    done = await cloud.until(
        lambda: _incidents(cloud, lambda i: i["id"] == inc["id"] and i["state"] == "RECOVERED")
    )
    shown = await cloud.ok("GET", f"/vim/v1/incidents/{done[0]['id']}")
    stages = [e["stage"] for e in shown["timeline"]]
    assert stages[:2] == ["failed", "detected"]  # the last heartbeat heard, then detection
    assert stages.count("placed") == 2 and stages.count("serving") == 2
    spans = {b["stage"]: b["seconds"] for b in shown["budgets"]}
    assert 0 < spans["detect"] < 5 and spans["fence"] is None  # no BMC: nothing fenced
    assert spans["total"] is not None and spans["total"] >= spans["detect"]
    alarms_of = {
        a["faultType"]
        for a in [await cloud.ok("GET", f"/vimfm/v1/alarms/{i}") for i in shown["alarmIds"]]
    }
    assert "HOST_UNREACHABLE" in alarms_of


async def test_rules_are_shown_and_reloaded_a_bad_file_keeps_them(cloud: Insightful) -> None:
    rules = await cloud.ok("GET", "/vim/v1/correlation/rules")
    assert [r["name"] for r in rules["forward"]] == ["host-failure"]
    path: Path = cloud.rules_file  # type: ignore[attr-defined]
    await asyncio.to_thread(path.write_text, "backward:\n  - name: broken\n")
    r = await cloud.call("POST", "/vim/v1/correlation/rules/reload")
    assert r.status_code == 400 and "backward[0]" in r.json()["detail"]
    assert (await cloud.ok("GET", "/vim/v1/correlation/rules"))["lastError"]
    r = await cloud.call("POST", "/vim/v1/correlation/rules/reload", token=OPERATOR)
    assert r.status_code == 403
    await asyncio.to_thread(
        path.write_text, "forward:\n  - {name: only, roots: [X], level: rack}\n"
    )
    reloaded = await cloud.ok("POST", "/vim/v1/correlation/rules/reload")
    assert [r["name"] for r in reloaded["forward"]] == ["only"] and reloaded["backward"] == []
    assert cloud.runtime.insight.rules.rules.forward[0].name == "only"
