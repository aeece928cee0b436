"""The embedded cloud's nodes: 3 control, 4 compute (2 zones, 2 racks), 1 storage, each with an
agent on two loopback planes, one demo service and a simulated Redfish BMC; and the launcher
that keeps the agents alive (the role systemd plays on a real node) while the node is powered.

The BMCs run in the launcher's process, as a node's BMC is a device apart from the node:
powering a node off through its BMC kills the node's agent and services (SIGKILL, as a power
cut does) and keeps them down until it is powered on again."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from vimha.cloud.bmc_sim import BmcState, serve
from vimha.cloud.demo_groups import demo_groups, group_ports
from vimha.cloud.netns import Netns, destroy, exec_prefix, namespace_pids
from vimha.cloud.parent import ENV
from vimha.cloud.procs import find_processes, guest_processes
from vimha.domain.errors import Permanent

log = logging.getLogger("vimha.cloud")
RESTART_DELAY = 2.0

# name, roles, zone, rack, service
LAYOUT = (
    ("ctl-1", ("control",), "z1", "r1", "api"),
    ("ctl-2", ("control",), "z1", "r1", "api"),
    ("ctl-3", ("control",), "z2", "r2", "api"),
    ("cmp-1", ("compute",), "z1", "r1", "nova-compute"),
    ("cmp-2", ("compute",), "z1", "r1", "nova-compute"),
    ("cmp-3", ("compute",), "z2", "r2", "nova-compute"),
    ("cmp-4", ("compute",), "z2", "r2", "nova-compute"),
    ("sto-1", ("storage",), "z1", "r1", "storage-daemon"),
)
PLANES = ("mgmt", "storage")
SERVICE_KINDS = {"api": "control", "nova-compute": "compute", "storage-daemon": "storage"}


@dataclass(frozen=True, slots=True)
class NodePlan:
    name: str
    roles: tuple[str, ...]
    location: dict[str, str]
    key: str
    addresses: dict[str, str]  # plane -> this node's address
    service: str
    service_port: int
    bmc_port: int
    bmc_password: str
    token: str  # its agent's API token (role agent, bound to this node)

    @property
    def bmc_url(self) -> str:
        return f"http://127.0.0.1:{self.bmc_port}"


def plan(data_dir: Path, port: int, net: Netns | None = None) -> list[NodePlan]:
    """The nodes, with keys kept in the data dir (0600) so restarts keep them; addresses on
    loopback, or in the nodes' network namespaces."""
    keys_file = data_dir / "node-keys.json"
    keys: dict[str, str] = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    nodes = []
    for i, (name, roles, zone, rack, service) in enumerate(LAYOUT, start=1):
        keys.setdefault(name, secrets.token_hex(16))
        keys.setdefault(f"{name}:bmc", secrets.token_hex(8))
        keys.setdefault(f"{name}:token", secrets.token_hex(16))
        nodes.append(
            NodePlan(
                name,
                roles,
                {"site": "s1", "zone": zone, "rack": rack},
                keys[name],
                {
                    plane: net.node_address(plane, i)
                    if net
                    else f"127.{j + 1}.{i // 256}.{i % 256}"
                    for j, plane in enumerate(PLANES)
                },
                service,
                port + 100 + i,
                port + 200 + i,
                keys[f"{name}:bmc"],
                keys[f"{name}:token"],
            )
        )
    fd = os.open(keys_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(keys, fh)
    return nodes


EMBEDDED_VIM = "vimha-embedded"


def coordination_url(data_dir: Path) -> str:
    """The controller and the control nodes' agents share one coordination file."""
    return f"local://{data_dir.resolve() / 'coord.db'}"


def tcp_ports(port: int) -> list[int]:
    """The TCP ports a cloud at `port` takes: the API, the demo services, the BMCs, the
    members of the demo service groups."""
    n = len(LAYOUT)
    return [
        port,
        *(port + 100 + i for i in range(1, n + 1)),
        *(port + 200 + i for i in range(1, n + 1)),
        *group_ports(port),
    ]


def check_ports(port: int, more: list[int] | None = None) -> None:
    """Refuse at once, with the port named, rather than fail half-started."""
    ports = tcp_ports(port) + (more or [])
    if port <= 0 or max(ports) >= 65536:
        raise Permanent(f"--port {port}: the cloud needs ports up to {max(ports)}")
    for p in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("0.0.0.0", p))  # taken on any address: the groups' are 127.1.0.x
            except OSError as exc:
                raise Permanent(
                    f"port {p}, needed by the embedded cloud at --port {port}, is taken "
                    f"({exc.strerror}): choose another --port"
                ) from None


def controller_host(net: Netns | None) -> str:
    """Where the nodes reach the controller: loopback, or its address on the mgmt bridge."""
    return net.controller_address(PLANES[0]) if net else "127.0.0.1"


def listen_addresses(port: int, net: Netns | None = None) -> dict[str, str]:
    return {
        plane: f"{net.controller_address(plane) if net else '127.0.0.1'}:{port + 1 + j}"
        for j, plane in enumerate(PLANES)
    }


def agent_tokens(nodes: list[NodePlan]) -> list[dict[str, str]]:
    """The controllers' tokens of the nodes' agents: each bound to its node (role agent)."""
    return [
        {"name": f"agent-{n.name}", "token": n.token, "role": "agent", "host": n.name}
        for n in nodes
    ]


def write_agent_config(
    data_dir: Path,
    node: NodePlan,
    port: int,
    net: Netns | None = None,
    patch: Callable[[dict[str, Any], NodePlan], None] | None = None,
) -> Path:
    home = data_dir / "nodes" / node.name
    (home / "control").mkdir(parents=True, exist_ok=True)
    listen = listen_addresses(port, net)
    config = {
        "node": node.name,
        "key": node.key,
        "interval": 0.1,
        "log_level": "warning",
        "controller_url": f"http://{controller_host(net)}:{port}",
        "token": node.token,  # its own: it speaks for this node only (role agent)
        "control_dir": str(home / "control"),
        "planes": [
            {"name": p, "local": node.addresses[p], "controller": listen[p]} for p in PLANES
        ],
        "services": [
            {
                "name": node.service,
                "kind": SERVICE_KINDS[node.service],
                "check": "http",
                "target": f"http://127.0.0.1:{node.service_port}/",
                "command": [
                    sys.executable,
                    "-m",
                    "vimha.cloud.demo_service",
                    "--port",
                    str(node.service_port),
                    "--node",
                    node.name,
                    "--service",
                    node.service,
                ],
                "interval": 0.2,
                "timeout": 0.5,
                "restart": {"max_restarts": 5, "window": 60, "start_grace": 5},
            }
        ],
    }
    if "compute" in node.roles:
        config["hypervisor"] = {
            "url": "process://",
            "instances_dir": str(home / "guests"),
            "console_listen": f"{node.addresses[PLANES[0]]}:0",
            "report_every": 5.0,
        }
    groups = demo_groups(node.name, node.addresses[PLANES[0]], port, home, net)
    if groups:
        config["groups"] = groups
        config["coordination_url"] = coordination_url(data_dir)
        config["run_dir"] = str(home / "run")
        config["vim"] = EMBEDDED_VIM
    if patch is not None:
        patch(config, node)
    path = home / "agent.yaml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        yaml.safe_dump(config, fh)
    return path


def write_state(data_dir: Path, nodes: list[NodePlan], net: Netns | None = None) -> None:
    """What `vimha chaos` needs to find the nodes."""
    state = {
        n.name: {
            **asdict(n),
            "key": None,
            "index": i,
            "net": asdict(net) if net else None,
            "bmc_url": n.bmc_url,
            "control": str(data_dir / "nodes" / n.name / "control"),
            "config": str(data_dir / "nodes" / n.name / "agent.yaml"),
        }
        for i, n in enumerate(nodes, start=1)
    }
    fd = os.open(data_dir / "cloud.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:  # it holds the BMC credentials
        json.dump(state, fh, indent=2)


class Launcher:
    """Starts each node's BMC and agent; restarts an agent that dies, after RESTART_DELAY,
    while its node is powered on."""

    def __init__(
        self,
        configs: dict[str, Path],
        log_dir: Path,
        nodes: list[NodePlan] | None = None,
        net: Netns | None = None,
        extras: dict[str, list[tuple[str, list[str]]]] | None = None,
    ) -> None:
        self.net = net
        self.configs = configs
        # Per node, more processes that live and die with it: (name, argv), e.g. etcd.
        self.extras = extras or {}
        self.extra_procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.log_dir = log_dir
        self.nodes = {n.name: n for n in nodes or []}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {}
        self.powered = dict.fromkeys(configs, True)
        self.lock = threading.Lock()
        self.bmcs: list[ThreadingHTTPServer] = []
        self.token = ""  # the admin token, for the demo VNFs
        self.qemu_image: Path | None = None  # the QEMU demo guest (vimha up --libvirt)
        self.cleanups: list[Callable[[], None]] = []  # run last at stop (e.g. the SDN's links)
        # Run alongside the nodes until the stop, e.g. the etcd access of --ha once it answers
        self.background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []

    def start_bmcs(self) -> None:
        for n in self.nodes.values():
            state = BmcState(on_power=functools.partial(self.set_power, n.name))
            try:
                server = serve("127.0.0.1", n.bmc_port, "admin", n.bmc_password, state)
            except OSError as exc:
                raise Permanent(f"BMC of {n.name}: port {n.bmc_port}: {exc.strerror}") from None
            self.bmcs.append(server)

    def set_power(self, node: str, on: bool) -> None:
        """What the node's power does to its processes (called by its BMC)."""
        with self.lock:
            self.powered[node] = on
            proc = self.procs.get(node)
            if on:
                self._start_extras(node)
                if proc is None or proc.poll() is not None:
                    self._start(node)
                log.warning("%s powered on through its BMC", node)
                return
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
            for (owner, _), extra in self.extra_procs.items():
                if owner == node and extra.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(extra.pid, signal.SIGKILL)
            port = self.nodes[node].service_port  # not another cloud's node of that name
            for pid in find_processes("vimha.cloud.demo_service", f"--port {port} --node {node} "):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in guest_processes(node, self.log_dir.parent):  # its VNF instances too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if self.net is not None:  # what else runs in the node (its switch's daemons)
                for pid in namespace_pids(self.net, node):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            log.warning("%s powered off through its BMC: its processes are stopped", node)

    def _start(self, node: str) -> None:
        logfile = open(self.log_dir / f"{node}.log", "ab")  # noqa: SIM115 - owned by the child
        # Its own session: a terminal's Ctrl-C reaches only `vimha up`, which stops the
        # controller first and the agents after, so shutting down raises no alarm.
        inside = exec_prefix(self.net, node) if self.net else []  # `ip netns exec` execs
        self.procs[node] = subprocess.Popen(
            [*inside, sys.executable, "-m", "vimha", "agent", "--config", str(self.configs[node])],
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, ENV: "1"},
        )
        logfile.close()

    def _start_extras(self, node: str) -> None:
        """The node's extra processes that are not running (each in its own session)."""
        for name, argv in self.extras.get(node, []):
            running = self.extra_procs.get((node, name))
            if running is not None and running.poll() is None:
                continue
            with open(self.log_dir / f"{node}-{name}.log", "ab") as logfile:
                self.extra_procs[(node, name)] = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

    async def run(self, stop: asyncio.Event) -> None:
        if not self.bmcs:
            self.start_bmcs()
        with self.lock:
            for node in self.extras:
                self._start_extras(node)
        for node in self.configs:
            self._start(node)
        log.info("started %d node agents", len(self.configs))
        dead_since: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            with self.lock:
                for (node, name), extra in list(self.extra_procs.items()):
                    if extra.poll() is not None and self.powered[node]:
                        log.warning("%s of %s exited (%s); restarting", name, node, extra.poll())
                        self._start_extras(node)
                for node, proc in list(self.procs.items()):
                    if proc.poll() is None or not self.powered[node]:
                        dead_since.pop(node, None)
                        continue
                    since = dead_since.setdefault(node, loop.time())
                    if loop.time() - since >= RESTART_DELAY:
                        log.warning("agent of %s exited (%s); restarting", node, proc.returncode)
                        self.restarts[node] = self.restarts.get(node, 0) + 1
                        del dead_since[node]
                        self._start(node)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    def stop(self) -> None:
        # all at once: each BMC's serve loop notices a shutdown within its poll interval
        # (0.5 s), one after the other that was seconds of every `vimha down`
        stoppers = [threading.Thread(target=server.shutdown) for server in self.bmcs]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()
        for server in self.bmcs:
            server.server_close()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        for extra in self.extra_procs.values():  # after the agents: their leases first
            if extra.poll() is None:
                extra.terminate()
        for extra in self.extra_procs.values():
            try:
                extra.wait(10)
            except subprocess.TimeoutExpired:
                extra.kill()
        for node in self.configs:  # the guests outlive their agents: the cloud is off now
            for pid in guest_processes(node, self.log_dir.parent):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if self.net is not None:
            destroy(self.net, list(self.configs))
        for cleanup in self.cleanups:
            cleanup()


def host_inventory(nodes: list[NodePlan]) -> list[dict[str, Any]]:
    return [
        {
            "name": n.name,
            "roles": list(n.roles),
            "location": n.location,
            "key": n.key,
            **(
                {"capacities": {"vcpus": 16, "ram_mib": 65536, "disk_gib": 500}}
                if "compute" in n.roles
                else {}
            ),
            "bmc": {
                "url": n.bmc_url,
                "user": "admin",
                "password": n.bmc_password,
                "interval": 1.0,
                "timeout": 1.0,
                "log_interval": 2.0,
            },
        }
        for n in nodes
    ]
