"""Insight (issue 20) in the embedded cloud (`vimha up`), real agents and guests:

- guests made to crash on one host within the window -> a latent-hardware alarm on that host,
  a root cause, with the instances' alarms correlated; one incident gathers them;
- an outage of known length (a guest crashed, restarted later) -> measured by the metrics
  as the guest's own silence, probed on its port;
- a host powered off -> one incident with its failure, detection and fencing timed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.test_embedded_cloud import Cloud, running_cloud
from tests.system.test_instances import guest_answer, until

pytestmark = pytest.mark.system
NET = "insight-net"


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(tmp_path_factory.mktemp("insight")) as c:
        until(lambda: c.get("/vim/v1/vnfs"), 90, "the demo VNFs")
        # A network of its own: on a shared machine, other embedded clouds' demo guests
        # hold the demo networks' first loopback addresses.
        octet = random.randrange(130, 190)  # the demo networks are in 127.64-127.127
        call(c, "POST", "/vim/v1/networks", json={"name": NET, "cidr": f"127.{octet}.0.0/24"})
        yield c


def call(cloud: Cloud, method: str, path: str, **kw: Any) -> Any:
    r = httpx.request(
        method,
        cloud.url + path,
        headers={"Authorization": f"Bearer {cloud.token}"},
        timeout=30,
        **kw,
    )
    assert r.status_code < 300, r.text
    return r.json() if r.content else None


def vnf_on(cloud: Cloud, name: str, host: str, count: int, **vdu: Any) -> list[dict[str, Any]]:
    created = call(
        cloud,
        "POST",
        "/vim/v1/vnfs",
        json={
            "name": name,
            "vdus": [
                {
                    "name": "app",
                    "count": count,
                    "flavor": "m1.tiny",
                    "image": "demo-guest",
                    "networks": [{"network": NET}],
                    "hints": {"host": host},
                    **vdu,
                }
            ],
        },
    )
    ids = {i["id"] for i in created["instances"]}
    return list(
        until(
            lambda: (
                (
                    got := [
                        i
                        for i in cloud.get("/vim/v1/instances")
                        if i["id"] in ids and i["status"] == "ACTIVE"
                    ]
                )
                and len(got) == count
                and got
            ),
            60,
            f"{name} ACTIVE",
        )
    )


def test_guests_crashing_on_one_host_reveal_a_latent_hardware_fault(cloud: Cloud) -> None:
    guests = vnf_on(cloud, "lat", "cmp-3", 3)
    for g in guests:
        assert "crash ->" in cloud.chaos("instance-crash", g["id"])

    def suspected() -> dict[str, Any] | None:
        found = cloud.get("/vimfm/v1/alarms", filter="(eq,faultType,SUSPECTED_LATENT_HW_FAULT)")
        if found and len(found[0]["correlatedAlarmIds"]) >= 3:
            return dict(found[0])
        return None

    suspect = until(suspected, 30, "the latent-hardware alarm")
    assert suspect["managedObjectId"] == "cmp-3" and suspect["isRootCause"] is True
    assert suspect["location"]["path"] == "s1/z2/r2/cmp-3"
    crashes = [call(cloud, "GET", f"/vimfm/v1/alarms/{i}") for i in suspect["correlatedAlarmIds"]]
    assert {g["id"] for g in guests} <= {
        c["rootCauseFaultyResource"]["faultyResource"]["resourceId"] for c in crashes
    }
    for c in crashes:
        assert c["faultType"] == "INSTANCE_CRASHED" and c["isRootCause"] is False
        assert suspect["id"] in c["correlatedAlarmIds"]
    incident = until(
        lambda: [
            i
            for i in cloud.get("/vim/v1/incidents", kind="ELEMENT")
            if i["subject"] == "cmp-3" and len(i["alarmIds"]) >= 4
        ],
        30,
        "its incident",
    )[0]
    assert "SUSPECTED_LATENT_HW_FAULT on cmp-3" in cloud.cli("incidents")
    shown = cloud.cli("incident", "show", incident["id"][:8])
    assert "SUSPECTED_LATENT_HW_FAULT" in shown and "INSTANCE_CRASHED" in shown
    figures = cloud.cli("metrics", "--host", "cmp-3")
    assert "host cmp-3" in figures
    host = call(cloud, "GET", "/vim/v1/metrics/hosts/cmp-3")
    assert host["instanceFailures"]["1h"] >= 3


class Probe:
    """Polls a guest's port every 20 ms: when it stopped and started answering again."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        self.silent_at: float | None = None
        self.back_at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        with httpx.Client(timeout=0.2) as c:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    ok = c.get(f"http://{self.ip}:8080/").status_code == 200
                except httpx.HTTPError:
                    ok = False
                if not ok and self.silent_at is None:
                    self.silent_at = t
                elif ok and self.silent_at is not None and self.back_at is None:
                    self.back_at = t
                    return
                time.sleep(0.02)


def test_an_outage_of_known_length_is_measured(cloud: Cloud) -> None:
    # recovery left to the VNFM: the guest stays down until rebooted by hand
    (guest,) = vnf_on(cloud, "out", "cmp-1", 1, recovery={"onFailure": "notify"})
    ip = guest["ports"][0]["ip"]
    until(lambda: guest_answer(ip), 20, "the guest answers")
    probe = Probe(ip)
    cloud.chaos("instance-crash", guest["id"])
    until(lambda: call(cloud, "GET", f"/vim/v1/instances/{guest['id']}")["status"] == "ERROR", 15)
    time.sleep(2.0)
    call(cloud, "POST", f"/vim/v1/instances/{guest['id']}/reboot", json={"type": "HARD"})
    until(lambda: probe.back_at is not None, 30, "the guest answers again")
    assert probe.silent_at is not None and probe.back_at is not None
    real = probe.back_at - probe.silent_at
    got = until(
        lambda: (
            (m := call(cloud, "GET", f"/vim/v1/metrics/instances/{guest['id']}"))["outages"]
            and m["outages"][0]["end"]
            and m
        ),
        20,
        "the outage measured",
    )
    (outage,) = got["outages"]
    measured = outage["durationSeconds"]
    print(f"outage: probed {real:.3f} s, measured {measured:.3f} s, diff {measured - real:+.3f} s")
    assert abs(measured - real) < 0.5, (real, measured)
    assert outage["cause"].startswith("INSTANCE_CRASHED") and got["windows"]["1h"]["failures"] == 1


def test_a_host_powered_off_is_one_incident_with_detection_and_fencing_timed(
    cloud: Cloud, tmp_path: Path
) -> None:
    on_it = {i["id"] for i in cloud.get("/vim/v1/instances") if i["host"] == "cmp-4"}
    cloud.chaos("power-off", "cmp-4")
    try:
        inc = until(
            lambda: [
                i
                for i in cloud.get("/vim/v1/incidents", kind="HOST")
                if i["subject"] == "cmp-4"
                and next(b for b in i["budgets"] if b["stage"] == "fence")["seconds"] is not None
            ],
            60,
            "the host's incident, fenced",
        )[0]
        shown = call(cloud, "GET", f"/vim/v1/incidents/{inc['id']}")
        stages = [e["stage"] for e in shown["timeline"] if e["stage"] != "alarm"]
        assert stages[:3] == ["failed", "detected", "fenced"]
        spans = {b["stage"]: b["seconds"] for b in shown["budgets"]}
        print(f"host incident: detect {spans['detect']} s, fence {spans['fence']} s")
        assert 0 < spans["detect"] < 3 and 0 < spans["fence"] < 10
        # the instances it had (recovered elsewhere by now)
        assert {a["instanceId"] for a in shown["affectedInstances"]} == on_it
        drawn = cloud.cli("incident", "show", inc["id"])
        assert "fenced" in drawn and "HOST_HW_FAILURE on cmp-4" in drawn
        prom = httpx.get(
            cloud.url + "/metrics", headers={"Authorization": f"Bearer {cloud.token}"}
        ).text
        assert "vimha_incidents_total" in prom
    finally:
        cloud.chaos("heal", "cmp-4")
