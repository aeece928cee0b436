"""Benchmark: fault event in -> notification received, and sustained ingest.

    python bench/fm_notify.py [--duration 20] [--rate 200] [--quick]

Scenarios (each with a fresh controller on SQLite and a real consumer process):
  notify-1   : `rate` events/s for `duration` s, 1 subscriber
  notify-20  : the same with 20 subscribers (targets: p99 <= 100 ms at 200 events/s)
  ingest     : events as fast as 4 client threads can send them, one per request, and in
               batches of 100 (target: >= 1,000 events/s sustained)
Latency is the consumer's receive time minus the time the load generator sent the event
(both on this machine's clock). Prints one JSON document, then a one-line summary.
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from _harness import Consumer, Controller, percentile, proc_stats

SENDERS = 8


def event(i: int, sent: float, prefix: str) -> dict[str, Any]:
    return {
        "managedObjectId": f"{prefix}-{i}",
        "faultType": "BENCH",
        "probableCause": "bench",
        "perceivedSeverity": "MAJOR",
        "eventType": "QOS_ALARM",
        "faultDetails": [f"sent={sent:.6f}"],
    }


def notify_scenario(
    subscribers: int, rate: float, duration: float, process: bool = True
) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="vimha-bench-")) / "received.jsonl"
    with (
        Controller(delivery={"process": process}) as ctl,
        Consumer(out) as consumer,
        httpx.Client(base_url=ctl.url, headers=ctl.headers, timeout=10) as client,
    ):
        for s in range(subscribers):
            r = client.post(
                "/vimfm/v1/subscriptions",
                json={
                    "callbackUri": f"http://127.0.0.1:{consumer.port}/s{s}",
                    "filter": {"notificationTypes": ["AlarmNotification"]},
                },
            )
            assert r.status_code == 201, r.text
        assert ctl.proc is not None and consumer.proc is not None
        cpu0, _ = proc_stats(ctl.proc.pid)
        ccpu0, _ = proc_stats(consumer.proc.pid)
        total = int(rate * duration)
        start = time.monotonic()
        wall0 = time.time()
        late = [0] * SENDERS

        def sender(k: int) -> None:
            # Open loop: event i is due at start + i/rate whatever happened to the others.
            # http.client, not httpx: the load generator's CPU competes with the controller's.
            conn = http.client.HTTPConnection("127.0.0.1", ctl.port, timeout=10)
            headers = {**ctl.headers, "Content-Type": "application/json"}
            for i in range(k, total, SENDERS):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -0.05:
                    late[k] += 1
                conn.request(
                    "POST", "/vim/v1/events", json.dumps(event(i, time.time(), "n")), headers
                )
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
            conn.close()

        threads = [threading.Thread(target=sender, args=(k,)) for k in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        send_elapsed = time.monotonic() - start
        expected = total * subscribers
        deadline = time.monotonic() + 30
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = out.read_text().splitlines() if out.exists() else []
            if len(lines) >= expected:
                break
            time.sleep(0.1)
        elapsed = time.time() - wall0
        cpu1, rss = proc_stats(ctl.proc.pid)
        ccpu1, _ = proc_stats(consumer.proc.pid)
    latencies = []
    seen = set()
    for line in lines:
        rec = json.loads(line)
        n = rec["n"]
        if n["id"] in seen:
            continue
        seen.add(n["id"])
        sent = float(n["alarm"]["faultDetails"][0].split("=")[1])
        latencies.append((rec["t"] - sent) * 1000)
    return {
        "scenario": f"notify-{subscribers}",
        "delivery_process": process,
        "subscribers": subscribers,
        "rate_target": rate,
        "rate_achieved": round(total / send_elapsed, 1),
        "events": total,
        "late_sends": sum(late),
        "notifications_expected": expected,
        "notifications_received": len(seen),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "deliveries_per_s": round(len(seen) / elapsed, 1),
        "controller_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "consumer_cpu_cores": round((ccpu1 - ccpu0) / elapsed, 3),
        "controller_rss_mib": round(rss, 1),
    }


def ingest_scenario(duration: float, batch: int, threads: int = 4) -> dict[str, Any]:
    with Controller() as ctl:
        assert ctl.proc is not None
        counts = [0] * threads
        stop = time.monotonic() + duration

        def worker(k: int) -> None:
            conn = http.client.HTTPConnection("127.0.0.1", ctl.port, timeout=30)
            headers = {**ctl.headers, "Content-Type": "application/json"}
            i = 0
            while time.monotonic() < stop:
                now = time.time()
                items = [event(i + j, now, f"i{k}") for j in range(batch)]
                body: Any = items if batch > 1 else items[0]
                conn.request("POST", "/vim/v1/events", json.dumps(body), headers)
                response = conn.getresponse()
                response.read()
                assert response.status == 200, response.status
                i += batch
                counts[k] += batch
            conn.close()

        cpu0, _ = proc_stats(ctl.proc.pid)
        t0 = time.monotonic()
        pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        elapsed = time.monotonic() - t0
        cpu1, rss = proc_stats(ctl.proc.pid)
        with httpx.Client(base_url=ctl.url, headers=ctl.headers) as client:
            stored = client.get("/vim/v1/status").json()["store"]["activeAlarms"]
    return {
        "scenario": f"ingest-batch{batch}",
        "batch": batch,
        "client_threads": threads,
        "events": sum(counts),
        "stored_alarms": stored,
        "events_per_s": round(sum(counts) / elapsed, 1),
        "controller_cpu_cores": round((cpu1 - cpu0) / elapsed, 3),
        "controller_rss_mib": round(rss, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--quick", action="store_true", help="5 s per scenario")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="deliver from the controller process (delivery.process: false)",
    )
    args = parser.parse_args()
    duration = 5.0 if args.quick else args.duration
    results = [
        notify_scenario(1, args.rate, duration, not args.in_process),
        notify_scenario(20, args.rate, duration, not args.in_process),
        ingest_scenario(duration, 1),
        ingest_scenario(duration, 100),
    ]
    print(json.dumps({"benchmark": "fm_notify", "results": results}, indent=2))
    n1, n20, single, batch = results
    ok = (
        n20["p99_ms"] <= 100
        and n20["notifications_received"] == n20["notifications_expected"]
        and n20["rate_achieved"] >= 0.95 * args.rate
        and max(single["events_per_s"], batch["events_per_s"]) >= 1000
    )
    print(
        f"fm_notify: {n20['rate_achieved']:.0f}/{args.rate:.0f} ev/s -> "
        f"1 sub p50/p99 {n1['p50_ms']}/{n1['p99_ms']} ms; "
        f"20 subs p50/p99 {n20['p50_ms']}/{n20['p99_ms']} ms "
        f"({n20['notifications_received']}/{n20['notifications_expected']} delivered); "
        f"ingest {single['events_per_s']:.0f} ev/s single, {batch['events_per_s']:.0f} ev/s "
        f"batched; targets {'MET' if ok else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
