"""The simulated nodes of `bench/fleet.py`: one slice of the fleet in one process.

    python bench/_fleet_nodes.py SPEC.json

For each of its hosts it does what a node's agent and BMC do, without guests:
- heartbeats on every plane to every controller, signed with the host's key by the agent's
  own encoder (`domain/heartbeat.py`), from one thread, spread over the interval;
- the host's BMC: a Redfish service (the documents and the power logic of
  `cloud/bmc_sim.py`), one asyncio HTTP/1.1 server for all the slice's BMCs, each BMC on an
  address of its own (127.3.x.y) told apart by the address a connection came to; a ForceOff
  powers the host off (no heartbeat, no report) until the driver powers it on again;
- the agent's side of the compute model (`agent/instances.py`): a long poll of
  `/vim/v1/hosts/{id}/instances/desired` and `PUT .../instances/observed` at every change
  and every `report_every`, reporting every desired guest RUNNING at its incarnation (the
  guests start at once: nothing runs).

The driver talks to it over a line-JSON control socket whose port is the first line of
stdout: {"op": "fail", "host": h} stops a host as a crash does (its BMC still answers, power
on) and answers the wall time it stopped at; "restore" powers it on again; "stats".
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from vimha.cloud.bmc_sim import ALLOWED_RESETS, BmcState, _doc
from vimha.domain.heartbeat import Heartbeat, encode

GUEST_STATES = {"running": "RUNNING", "paused": "PAUSED", "stopped": "SHUTOFF"}
RESOURCES = {"vcpus": 16, "ramMib": 65536, "diskGib": 500, "traits": [], "hypervisor": "process"}


class Node:
    """One simulated host: its agent's state and its BMC."""

    def __init__(self, spec: dict[str, Any], user: str, password: str) -> None:
        self.name: str = spec["name"]
        self.key = spec["key"].encode()
        self.token: str = spec["token"]
        self.bmc_address: str = spec["bmc_address"]
        self.boot_id = os.urandom(16)
        self.seq = 0
        self.alive = True  # heartbeating and reporting
        self.stopped_at: float | None = None
        self.generation = -1
        self.desired: dict[str, dict[str, Any]] = {}
        self.changed = asyncio.Event()
        self.bmc = BmcState(on_power=self.power)
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def power(self, on: bool) -> None:
        """What the BMC's power does to the node (called on the loop's thread)."""
        if on and not self.alive:
            self.boot_id, self.seq = os.urandom(16), 0  # a new boot of the agent
            self.generation, self.desired = -1, {}
            self.alive, self.stopped_at = True, None
            self.changed.set()
        elif not on and self.alive:
            self.fail()

    def fail(self) -> float:
        self.alive = False
        self.stopped_at = time.time()
        return self.stopped_at

    def guests(self) -> list[dict[str, Any]]:
        return [
            {"id": i, "incarnation": int(d["incarnation"]), "state": GUEST_STATES[d["power"]]}
            for i, d in self.desired.items()
            if d["power"] in GUEST_STATES
        ]


class Fleet:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.nodes = [Node(h, spec["bmc_user"], spec["bmc_password"]) for h in spec["hosts"]]
        self.by_name = {n.name: n for n in self.nodes}
        self.by_bmc = {n.bmc_address: n for n in self.nodes}
        self.counts = dict.fromkeys(
            ("heartbeats", "reports", "report_errors", "watch_errors", "bmc_requests"), 0
        )
        self.halt = threading.Event()

    # -- heartbeats, from a thread of their own (as the agent sends them) -----------------
    def heartbeats(self) -> None:
        planes = [
            (plane, [(h, int(p)) for h, _, p in (a.rpartition(":") for a in targets)])
            for plane, targets in self.spec["planes"].items()
        ]
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        interval = float(self.spec["interval"])
        slices = 10  # agents are not in step: each round is spread over the interval
        next_at = time.monotonic()
        part = 0
        while not self.halt.is_set():
            now_ms = int(time.time() * 1000)
            sent = 0
            for node in self.nodes[part::slices]:
                if not node.alive:
                    continue
                node.seq += 1
                for plane, targets in planes:
                    data = encode(
                        Heartbeat(node.name, plane, node.boot_id, node.seq, now_ms), node.key
                    )
                    for target in targets:
                        with contextlib.suppress(OSError):
                            sock.sendto(data, target)
                            sent += 1
            self.counts["heartbeats"] += sent
            part = (part + 1) % slices
            next_at += interval / slices
            delay = next_at - time.monotonic()
            if delay < 0:
                next_at, delay = time.monotonic(), 0.0
            self.halt.wait(delay)

    # -- the agents' compute side ---------------------------------------------------------
    async def agent(self, client: httpx.AsyncClient, node: Node) -> None:
        await asyncio.gather(self._watch(client, node), self._reporter(client, node))

    async def _watch(self, client: httpx.AsyncClient, node: Node) -> None:
        path = f"/vim/v1/hosts/{node.name}/instances/desired"
        headers = {"Authorization": f"Bearer {node.token}"}
        wait = float(self.spec["watch_wait"])
        while True:
            if not node.alive:
                await asyncio.sleep(0.2)
                continue
            params = {"generation": node.generation, "wait": wait if node.generation >= 0 else 0}
            try:
                r = await client.get(path, params=params, headers=headers, timeout=wait + 15)
                r.raise_for_status()
                doc = r.json()
            except (httpx.HTTPError, ValueError):
                self.counts["watch_errors"] += 1
                await asyncio.sleep(1.0)
                continue
            if not node.alive:
                continue
            generation = int(doc["generation"])
            if generation != node.generation:
                node.generation = generation
                node.desired = {
                    i["id"]: {"incarnation": i["incarnation"], "power": i["power"]}
                    for i in doc["instances"]
                }
                node.changed.set()

    async def _reporter(self, client: httpx.AsyncClient, node: Node) -> None:
        path = f"/vim/v1/hosts/{node.name}/instances/observed"
        headers = {"Authorization": f"Bearer {node.token}"}
        every = float(self.spec["report_every"])
        # Agents started together are not in step either.
        await asyncio.sleep(every * (hash(node.name) % 1000) / 1000)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(node.changed.wait(), every)
            node.changed.clear()
            if not node.alive or node.generation < 0:
                continue
            body = {"guests": node.guests(), "resources": RESOURCES}
            try:
                r = await client.put(path, json=body, headers=headers, timeout=30)
                r.raise_for_status()
                self.counts["reports"] += 1
            except httpx.HTTPError:
                self.counts["report_errors"] += 1
                await asyncio.sleep(1.0)
                node.changed.set()

    # -- the driver's commands ------------------------------------------------------------
    async def control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            cmd = json.loads(line)
            node = self.by_name.get(cmd.get("host", ""))
            answer: dict[str, Any] = {}
            if cmd["op"] == "fail" and node is not None:
                answer = {"at": node.fail()}
            elif cmd["op"] == "restore" and node is not None:
                node.bmc.reset("On")
                node.power(True)  # a crashed node (power still on) is restarted too
                answer = {"alive": node.alive}
            elif cmd["op"] == "stats":
                answer = {**self.counts, "alive": sum(n.alive for n in self.nodes)}
            elif cmd["op"] == "power" and node is not None:
                answer = {"on": node.bmc.power_on, "alive": node.alive}
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        writer.close()


class BmcProtocol(asyncio.Protocol):
    """A lean HTTP/1.1 server for many simulated BMCs (keep-alive, Content-Length bodies):
    ThreadingHTTPServer's thread per connection does not carry a thousand BMCs."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.node: Node | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.node = self.fleet.by_bmc.get(transport.get_extra_info("sockname")[0])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            method, path, _ = head[0].split(" ", 2)
            self.fleet.counts["bmc_requests"] += 1
            status, doc = self.handle(method, path.split("?")[0], headers, body)
            self.respond(status, doc, headers.get("connection", "").lower() == "close")

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        node = self.node
        if node is None:
            return 404, None
        if path.rstrip("/") != "/redfish/v1" and headers.get("authorization") != node.auth:
            return 401, {"error": {"message": "authentication required"}}
        if method == "GET":
            doc = _doc(path, node.bmc)
            return (200, doc) if doc is not None else (404, None)
        if method == "POST" and path == "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset":
            kind = json.loads(body or b"{}").get("ResetType")
            if kind not in ALLOWED_RESETS:
                return 400, {"error": {"message": f"bad ResetType {kind!r}"}}
            node.bmc.reset(kind)
            return 204, None
        return 404, None

    def respond(self, status: int, doc: Any, close: bool) -> None:
        assert self.transport is not None
        body = json.dumps(doc).encode() if doc is not None else b""
        reason = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized"}
        head = [
            f"HTTP/1.1 {status} {reason.get(status, 'Not Found')}",
            f"Content-Length: {len(body)}",
        ]
        if body:
            head.append("Content-Type: application/json")
        if close:
            head.append("Connection: close")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if close:
            self.transport.close()


async def main(spec: dict[str, Any]) -> None:
    fleet = Fleet(spec)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    addresses = [n.bmc_address for n in fleet.nodes]
    servers = []
    for start in range(0, len(addresses), 200):  # create_server binds one socket per address
        servers.append(
            await loop.create_server(
                lambda: BmcProtocol(fleet),
                host=addresses[start : start + 200],
                port=int(spec["bmc_port"]),
                reuse_address=True,
            )
        )
    control = await asyncio.start_server(fleet.control, "127.0.0.1", 0)
    thread = threading.Thread(target=fleet.heartbeats, name="heartbeats", daemon=True)
    thread.start()
    limits = httpx.Limits(max_connections=2 * len(fleet.nodes) + 10, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=spec["api"], limits=limits) as client:
        agents = [asyncio.create_task(fleet.agent(client, n)) for n in fleet.nodes]
        print(control.sockets[0].getsockname()[1], flush=True)
        await stop.wait()
        fleet.halt.set()
        for task in agents:
            task.cancel()
        await asyncio.gather(*agents, return_exceptions=True)
    for server in servers:
        server.close()
    control.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(Path(sys.argv[1]).read_text())))
