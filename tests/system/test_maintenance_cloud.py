"""Host maintenance and migration for real (issue 19): the embedded cloud (`vimha up`), its
agents migrating process guests (stop, copy, start) between compute hosts.

- A VNF of 3 instances apart (anti-affinity per host) with the disruption budget "at least 2
  of 3 serving, at most 1 unavailable", probed over HTTP on its instances' ports every
  50 ms while a rolling maintenance of the four compute hosts runs (`vimha maintenance
  start`): never fewer than 2 answer, the budget is never exceeded (as the API shows it and
  as the migrations' times show it), every instance serves at the end, apart, in its initial
  state; the session is MAINTENANCE_COMPLETE. A VNFM (a small HTTP server of the test,
  subscribed through the API) answers every step; the instance of another VNF whose
  migration is forbidden is never migrated: its VNFM is told, answers EVICTION once it has
  moved its service, and the instance is stopped and rebuilt elsewhere.
- An abort mid-way (`vimha maintenance abort`): what moved stays where it went, nothing is
  lost, no host is left out of service.
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from tests.system.conftest import vimha
from tests.system.test_embedded_cloud import Cloud, running_cloud
from vimha.cloud.demo_vnfs import COMPUTE, FLAVOR, IMAGE

PROBE_EVERY = 0.05
# A stopped guest refuses at once (nothing listens on its address): a probe that waits is
# the machine, not the guest (a loaded CI), so it waits long before it counts as down.
PROBE_TIMEOUT = 10.0


def until(pred: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, f"{what} not reached"
        time.sleep(0.1)
    return result


def vdu(name: str, count: int, **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "count": count,
        "flavor": FLAVOR,
        "image": IMAGE,
        "networks": [{"network": "vnf-a"}],
        **more,
    }


SERVICE = {
    "name": "vsvc",
    "vdus": [
        vdu(
            "svc",
            3,
            migration={"policy": "cold"},
            placement=[{"policy": "anti-affinity", "level": "host"}],
        )
    ],
    "disruptionBudget": {"minAvailable": 2, "maxUnavailable": 1},
}
FORBIDDEN = {"name": "vdb", "vdus": [vdu("db", 1, migration={"policy": "forbidden"})]}


class Vnfm:
    """A VNFM of the test: subscribed to maintenance notifications, it acknowledges every
    step and answers per instance: the default of the plan, EVICTION for an instance whose
    migration is forbidden once it has moved its service (here: noted)."""

    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.received: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self.switched: dict[str, float] = {}  # instance id -> when its service moved away
        self.health: dict[str, list[str]] = {}  # host -> the health statuses it was told
        self.errors: list[str] = []
        self.lock = threading.Lock()
        vnfm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # the subscription's test
                self.send_response(204)
                self.end_headers()

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()
                threading.Thread(target=vnfm.on_notification, args=(body,), daemon=True).start()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"

    def subscribe(self) -> None:
        r = httpx.post(
            f"{self.cloud.url}/vimfm/v1/subscriptions",
            json={
                "callbackUri": self.url,
                "filter": {
                    "notificationTypes": [
                        "VnfMaintenanceNotification",
                        "HostHealthChangeNotification",
                    ]
                },
            },
            headers={"Authorization": f"Bearer {self.cloud.token}"},
            timeout=30,
        )
        assert r.status_code == 201, r.text

    def on_notification(self, n: dict[str, Any]) -> None:
        if n.get("notificationType") == "HostHealthChangeNotification":
            with self.lock:
                self.health.setdefault(n["hostId"], []).append(n["healthStatus"])
            return
        with self.lock:
            self.received.append(n)
        state = n.get("state", "")
        if state not in ("MAINTENANCE", "SCALE_IN", "PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            return
        answer: dict[str, Any] = {"state": f"ACK_{state}"}
        if state == "PLANNED_MAINTENANCE":
            actions = {}
            for inst in n["instances"]:
                if inst["migrationPolicy"] == "forbidden":
                    self.switched[inst["instanceId"]] = time.monotonic()  # its standby takes over
                    actions[inst["instanceId"]] = "EVICTION"
                else:
                    actions[inst["instanceId"]] = inst["defaultAction"]
            answer["instanceActions"] = actions
        try:
            r = httpx.put(
                n["_links"]["reply"]["href"],
                json=answer,
                headers={"Authorization": f"Bearer {self.cloud.token}"},
                timeout=30,
            )
        except httpx.HTTPError as exc:
            self.errors.append(f"{state}: {exc}")
            return
        if r.status_code != 202 and "is ABORTED" not in r.text:
            self.errors.append(f"{state}: {r.status_code} {r.text}")
        with self.lock:
            self.answered.append({"notification": n, "answer": answer, "status": r.status_code})

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Prober:
    """One thread per instance asks its port every 50 ms (HTTP GET, a fresh connection);
    one more reads the VNF's instances from the API every 250 ms. Every sample is kept."""

    def __init__(self, cloud: Cloud, vnf_id: str, ips: dict[str, str]) -> None:
        self.cloud = cloud
        self.vnf_id = vnf_id
        self.ips = ips
        # (sent, answered, whether it answered 200, why not)
        self.samples: dict[str, list[tuple[float, float, bool, str]]] = {i: [] for i in ips}
        self.views: list[tuple[float, int, int]] = []  # (time, serving, unavailable)
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=self._probe, args=(iid, ip), daemon=True)
            for iid, ip in ips.items()
        ]
        self.threads.append(threading.Thread(target=self._watch, daemon=True))

    def __enter__(self) -> Prober:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(10)

    def _probe(self, iid: str, ip: str) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            why = ask(ip)
            self.samples[iid].append((started, time.monotonic(), not why, why))
            self.stop.wait(max(0.0, PROBE_EVERY - (time.monotonic() - started)))

    def _watch(self) -> None:
        with httpx.Client(
            base_url=self.cloud.url,
            headers={"Authorization": f"Bearer {self.cloud.token}"},
            timeout=10,
        ) as c:
            while not self.stop.is_set():
                try:
                    found = c.get("/vim/v1/instances").json()
                except (httpx.HTTPError, ValueError):
                    continue
                mine = [i for i in found if i["vnfId"] == self.vnf_id]
                serving = sum(1 for i in mine if i["status"] == "ACTIVE" and not i["taskState"])
                self.views.append((time.monotonic(), serving, len(mine) - serving))
                self.stop.wait(0.25)

    def outages(self, iid: str) -> list[tuple[float, float, str]]:
        """When the instance did not serve: from the last answer before a failed probe to
        the first answer after it, with why its probes failed."""
        out: list[tuple[float, float, str]] = []
        last_ok: float | None = None
        failing_since: float | None = None
        whys: set[str] = set()
        for started, ended, ok, why in self.samples[iid]:
            if ok:
                if failing_since is not None:
                    out.append((failing_since, started, ", ".join(sorted(whys))))
                    failing_since, whys = None, set()
                last_ok = ended
                continue
            whys.add(why)
            if failing_since is None:
                failing_since = last_ok if last_ok is not None else started
        if failing_since is not None:
            out.append((failing_since, time.monotonic(), ", ".join(sorted(whys))))
        return out

    def fewest_serving(self) -> tuple[int, list[str]]:
        """The fewest instances that served at once, with the outages that overlapped then
        (instance, from, to, why; in seconds of the test's clock)."""
        spans = [(iid, *o) for iid in self.samples for o in self.outages(iid)]
        worst, when = 0, []
        for _, a, _, _ in spans:  # the most outages under way at one of their starts
            now = [x for x in spans if x[1] <= a < x[2]]
            if len(now) > worst:
                worst = len(now)
                when = [f"{i[:8]} {x:.3f}-{y:.3f} ({why})" for i, x, y, why in now]
        return len(self.samples) - worst, when


def ask(ip: str) -> str:
    """ "" when the guest at `ip` answers 200, else why not."""
    try:
        with socket.create_connection((ip, 8080), timeout=PROBE_TIMEOUT) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            line = s.recv(64)
    except OSError as exc:
        return type(exc).__name__
    return "" if line.startswith(b"HTTP/1.0 200") else f"answered {line[:20]!r}"


def answer_of(ip: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://{ip}:8080/", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return None


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    with running_cloud(tmp_path_factory.mktemp("maintenance")) as c:
        api = httpx.Client(
            base_url=c.url, headers={"Authorization": f"Bearer {c.token}"}, timeout=30
        )
        until(lambda: len(c.get("/vim/v1/vnfs")) == 2, 90, "the demo VNFs")
        for desc in (SERVICE, FORBIDDEN):
            r = api.post("/vim/v1/vnfs", json=desc)
            assert r.status_code == 201, r.text
        until(
            lambda: [i["status"] for i in c.get("/vim/v1/instances")] == ["ACTIVE"] * 9,
            90,
            "every instance ACTIVE",
        )
        api.close()
        yield c


@pytest.fixture(scope="module")
def vnfm(cloud: Cloud) -> Iterator[Vnfm]:
    v = Vnfm(cloud)
    v.subscribe()
    try:
        yield v
    finally:
        v.close()


def instances(cloud: Cloud) -> dict[str, dict[str, Any]]:
    return {i["id"]: i for i in cloud.get("/vim/v1/instances")}


def every_instance_serves(cloud: Cloud, before: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every instance there before is there, ACTIVE, answering in its initial state."""
    now = until(
        lambda: (
            (found := instances(cloud)).keys() == before.keys()
            and all(i["status"] == "ACTIVE" and not i["taskState"] for i in found.values())
            and found
        ),
        60,
        "every instance ACTIVE",
    )
    for iid, inst in now.items():
        body = until(lambda i=inst: answer_of(i["ports"][0]["ip"]), 30, f"{inst['name']} answers")
        assert body["instance"] == iid and body["digest"] == before[iid]["initialStateDigest"]
        assert body["incarnation"] == inst["incarnation"]
    return now


def session(cloud: Cloud, sid: str) -> dict[str, Any]:
    return dict(cloud.get(f"/vim/v1/maintenance/{sid}"))


def ends(cloud: Cloud, sid: str, state: str, within: float) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while (s := session(cloud, sid))["state"] != state:
        assert time.monotonic() < deadline and s["state"] not in ("FAILED", "ABORTED"), (
            f"{s['state']} ({s['currentHost']}): {s['waiting']}; {s['history'][-4:]}; "
            f"logs in {cloud.keep_logs()}"
        )
        time.sleep(0.25)
    return s


def measured(cloud: Cloud, sid: str, vnf_id: str, within: float = 30) -> list[dict[str, Any]]:
    """The session's migrations of the VNF once each has its interruption measured."""
    deadline = time.monotonic() + within
    while True:
        migs = [m for m in cloud.get("/vim/v1/migrations", sessionId=sid) if m["vnfId"] == vnf_id]
        if all(m["interruptionMs"] is not None for m in migs):
            return migs
        assert time.monotonic() < deadline, [
            (m["instanceName"], m["state"], m["interruptionMs"], m["detail"]) for m in migs
        ]
        time.sleep(0.25)


def test_a_rolling_maintenance_of_every_compute_host_keeps_the_budget(
    cloud: Cloud, vnfm: Vnfm
) -> None:
    vnfs = {v["name"]: v for v in cloud.get("/vim/v1/vnfs")}
    svc, db = vnfs["vsvc"]["id"], vnfs["vdb"]["id"]
    before = instances(cloud)
    mine = {i: v for i, v in before.items() if v["vnfId"] == svc}
    assert len({v["host"] for v in mine.values()}) == 3  # apart
    (forbidden,) = (i for i, v in before.items() if v["vnfId"] == db)
    ips = {i: v["ports"][0]["ip"] for i, v in mine.items()}
    with Prober(cloud, svc, ips) as prober:
        until(lambda: all(len(s) > 3 for s in prober.samples.values()), 30, "probes")
        r = vimha(
            "maintenance", "start", *COMPUTE, "--answer-window", "10", "--host-window", "1",
            "--json", "--url", cloud.url, "--token", cloud.token,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        sid = json.loads(r.stdout)["id"]
        done = ends(cloud, sid, "MAINTENANCE_COMPLETE", 150)
        after = every_instance_serves(cloud, before)
        time.sleep(0.3)  # a few probes after the end
    fewest, when = prober.fewest_serving()
    assert fewest >= 2, f"only {fewest} of 3 served at once: {when}"
    assert min(s for _, s, _ in prober.views) >= 2
    assert max(u for _, _, u in prober.views) <= 1
    assert done["hostStates"] == dict.fromkeys(COMPUTE, "DONE")
    # Each host was in maintenance (told to subscribers), none failed, all back in service.
    assert all(vnfm.health.get(h, [])[-2:] == ["MAINTENANCE", "UP"] for h in COMPUTE), vnfm.health
    hosts = cloud.hosts()
    assert all(
        hosts[h]["maintenance"] is None and hosts[h]["healthStatus"] == "UP" for h in COMPUTE
    )

    # Every instance of the VNF migrated cold, one at a time, and is still apart; each
    # interruption measured by the source's probe (reported once the guest answered again).
    migs = measured(cloud, sid, svc)
    assert len(migs) >= 3 and {m["state"] for m in migs} == {"COMPLETED"}
    spans = sorted((stamp(m["createdAt"]), stamp(m["finishedAt"])) for m in migs)
    assert all(b[0] >= a[1] for a, b in itertools.pairwise(spans)), spans
    assert {m["kind"] for m in migs} == {"cold"}
    assert len({after[i]["host"] for i in mine}) == 3
    assert all(after[i]["incarnation"] == mine[i]["incarnation"] for i in mine)

    # The forbidden one: never migrated; its VNFM told and answering, then rebuilt elsewhere.
    assert not [m for m in done["migrations"] if m["instanceId"] == forbidden]
    actions = [a["action"] for a in cloud.get(f"/vim/v1/instances/{forbidden}/actions")]
    assert "migrate" not in actions and "evict" in actions
    assert after[forbidden]["incarnation"] > before[forbidden]["incarnation"]
    assert forbidden in vnfm.switched
    told = [n for n in vnfm.received if n["vnfInstanceId"] == db]
    assert {n["state"] for n in told} >= {"PLANNED_MAINTENANCE", "MAINTENANCE_COMPLETE"}
    assert not vnfm.errors, vnfm.errors
    alarms = cloud.get("/vimfm/v1/alarms")
    assert not [a for a in alarms if a["faultType"].startswith(("HOST", "MIGRATION"))], alarms


def test_an_abort_mid_way_keeps_what_moved_and_loses_nothing(cloud: Cloud, vnfm: Vnfm) -> None:
    before = instances(cloud)
    svc = next(v["id"] for v in cloud.get("/vim/v1/vnfs") if v["name"] == "vsvc")
    # First a host with an instance to migrate (the VNF's), held in maintenance 30 s.
    first = next(h for h in COMPUTE if any(i["host"] == h and i["vnfId"] == svc
                                           for i in before.values()))  # fmt: skip
    order = [first, *(h for h in COMPUTE if h != first)]
    r = vimha(
        "maintenance", "start", *order, "--answer-window", "10", "--host-window", "30",
        "--json", "--url", cloud.url, "--token", cloud.token,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stdout)["id"]
    s = until(
        lambda: (s := session(cloud, sid))["hostStates"].get(first) == "IN_MAINTENANCE" and s,
        120,
        f"{first} emptied",
    )
    r = vimha("maintenance", "abort", "--url", cloud.url, "--token", cloud.token)
    assert r.returncode == 0, r.stderr
    aborted = ends(cloud, sid, "ABORTED", 60)
    assert set(aborted["hostStates"].values()) == {"SKIPPED"}  # none maintained to the end
    assert {m["source"] for m in aborted["migrations"]} == {first}  # no other host emptied
    after = every_instance_serves(cloud, before)
    moved = {m["instanceId"]: m["dest"] for m in s["migrations"] if m["state"] == "COMPLETED"}
    assert moved, s["migrations"]
    assert all(after[i]["host"] == dest for i, dest in moved.items())  # what moved stays
    assert not any(i["host"] == first for i in after.values())  # nothing came back
    hosts = cloud.hosts()
    assert all(
        hosts[h]["maintenance"] is None and hosts[h]["healthStatus"] == "UP" for h in COMPUTE
    )
    assert (
        "ABORTED" in vimha("maintenance", "show", "--url", cloud.url, "--token", cloud.token).stdout
    )
    assert not vnfm.errors, vnfm.errors
