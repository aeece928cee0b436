"""The dashboard at 1,000 hosts (issue 21): a controller in this process with 1,000 hosts
declared in 2 sites, 4 zones and 40 racks, and 300 active alarms; each page asked as a
browser asks it (the full page, then the fragment a live event or a filter asks for).

Prints JSON: per request, the server time p50/max over the runs (in-process ASGI, no
network), the HTML size and its gzip size (what the controller sends: /ui compresses); and
the time of each live marker, which the poller reads every second while a page is open.
The hosts never heartbeat here: they are all UNKNOWN, so "problems only" lists them all.
Usage: .venv/bin/python bench/ui_pages.py [--hosts 1000] [--alarms 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import re
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vimha.api.app import create_app
from vimha.api.ui.live import MARKERS
from vimha.config import load
from vimha.controller import build_auth, open_store
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.runtime import Runtime

TOKEN = "bench-admin-token-0123456789"
ASKS = [
    ("topology", {}),
    ("topology", {"health": "PROBLEMS"}),
    ("topology", {"place": "s1/z1/r01"}),
    ("topology", {"host": "cmp-0042"}),
    ("alarms", {}),
    ("groups", {}),
    ("vnfs", {}),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hosts(n: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"cmp-{i:04d}",
            "key": "k" * 32,
            "location": {
                "site": f"s{i % 2 + 1}",
                "zone": f"z{i // 2 % 2 + 1}",
                "rack": f"r{i // 4 % 10 + 1:02d}",
            },
        }
        for i in range(n)
    ]


async def run(n_hosts: int, n_alarms: int, runs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vimha-ui-bench-") as tmp:
        config = load(
            None,
            {
                "store": {"url": f"sqlite:///{Path(tmp) / 'ui.db'}"},
                "delivery": {"process": False},
                "auth": {"tokens": [{"name": "admin", "token": TOKEN, "role": "admin"}]},
                "hosts": hosts(n_hosts),
                "heartbeat": {"listen": {"mgmt": f"127.0.0.1:{free_port()}"}},
            },
        )
        store = open_store(config, migrate=True)
        runtime = Runtime(config, store, HttpNotifier(2, 2), SystemClock())
        app = create_app(runtime, build_auth(config))
        await runtime.start()
        transport = httpx.ASGITransport(app=app)
        out: dict[str, Any] = {"hosts": n_hosts, "alarms": n_alarms, "runs": runs}
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as c:
                auth = {"Authorization": f"Bearer {TOKEN}"}
                for i in range(0, n_alarms, 100):
                    batch = [
                        {
                            "managedObjectId": f"cmp-{j % n_hosts:04d}",
                            "faultType": "HOST_DOWN",
                            "probableCause": "power",
                            "perceivedSeverity": "MAJOR",
                            "eventType": "EQUIPMENT_ALARM",
                        }
                        for j in range(i, min(i + 100, n_alarms))
                    ]
                    r = await c.post("/vim/v1/events", json=batch, headers=auth)
                    r.raise_for_status()
                r = await c.post("/ui/login", data={"token": TOKEN, "next": "/ui/"})
                for slug, params in ASKS:
                    for kind, headers in (
                        ("page", {}),
                        ("fragment", {"HX-Request": "true", "HX-Target": "live"}),
                    ):
                        times, body = [], b""
                        for _ in range(runs):
                            t = time.perf_counter()
                            r = await c.get(f"/ui/{slug}", params=params, headers=headers)
                            times.append(time.perf_counter() - t)
                            r.raise_for_status()
                            body = r.content
                        times.sort()
                        query = "&".join(f"{k}={v}" for k, v in params.items())
                        key = f"{slug}{'?' + query if query else ''} {kind}"
                        out[key] = {
                            "p50Ms": round(times[len(times) // 2] * 1000, 1),
                            "maxMs": round(times[-1] * 1000, 1),
                            "htmlKiB": round(len(body) / 1024, 1),
                            "gzipKiB": round(len(gzip.compress(body, 6)) / 1024, 1),
                            "tiles": len(re.findall(rb'class="tile ', body)),
                        }
            for name, topic in MARKERS.items():  # what the live poller reads every second
                times = []
                for _ in range(runs):
                    t = time.perf_counter()
                    topic.marker(runtime)
                    times.append(time.perf_counter() - t)
                out[f"marker {name}"] = {"p50Ms": round(sorted(times)[len(times) // 2] * 1000, 2)}
        finally:
            await runtime.stop()
            store.close()
        return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--alarms", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    result = asyncio.run(run(args.hosts, args.alarms, args.runs))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
