"""One service group run by three real agent processes on this machine, sharing a single-host
coordination file: the harness of the stateful handlers' system tests (PostgreSQL, MariaDB)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port
from tests.support.procs import keep_logs, stop_all
from vimha.cloud import netns
from vimha.cloud.netns import Netns
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_mirror import load_json
from vimha.drivers.coordination import open_coordination


def until(pred: Any, timeout: float = 60, seen: Callable[[], object] | None = None) -> Any:
    """`pred()` once it is true; on time out, fails with what `seen()` says."""
    deadline = time.monotonic() + timeout
    while not (result := pred()):
        assert time.monotonic() < deadline, f"condition not reached: {seen() if seen else ''}"
        time.sleep(0.1)
    return result


class AgentGroup:
    """Group `name` (active-standby, unless `policy` says otherwise) on nodes `nodes`;
    `handler(port)` is each member's handler declaration, on a port of its own (in a network
    namespace of its own with `net`). With `frontends`, a fourth agent (`lb`) runs an HAProxy
    in front of the group (each frontend's `bind` is filled in: `self.lb[<frontend name>]`)."""

    def __init__(
        self,
        base: Path,
        nodes: tuple[str, ...],
        handler: Callable[[int], dict[str, Any]],
        name: str = "db",
        policy: dict[str, Any] | None = None,
        frontends: list[dict[str, Any]] | None = None,
        net: Netns | None = None,
    ) -> None:
        self.base = base
        os.chmod(base, 0o755)  # the servers' OS users (postgres, mysql) reach their dirs
        self.nodes = nodes
        self.url = f"local://{base / 'coord.db'}"
        self.prefix = f"/vimha/vimha/groups/{name}/"
        self.ports = {n: free_port() for n in nodes}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        # with `net`, each member's agent runs in a network namespace of its own, linked to
        # the others by a bridge (the balancer and the tests stay in the root namespace)
        self.net = net
        self.hosts = {
            n: net.node_address("mgmt", i) if net else "127.0.0.1"
            for i, n in enumerate(nodes, start=1)
        }
        self.lb: dict[str, str] = {}
        udp = free_port()
        agents = list(nodes)
        if frontends:
            agents.append("lb")
            for f in frontends:
                self.lb[f.get("name", f["group"])] = f"127.0.0.1:{free_port()}"
        for node in agents:
            home = base / node
            home.mkdir(parents=True)
            config = {
                "node": node,
                "key": "k" * 16,
                "planes": [
                    {"name": "mgmt", "local": "127.0.0.1", "controller": f"127.0.0.1:{udp}"}
                ],
                "coordination_url": self.url,
                "run_dir": str(home / "run"),
                "log_level": "warning",
            }
            if node == "lb":
                lb = [{**f, "bind": self.lb[f.get("name", f["group"])]} for f in frontends or ()]
                config["groups"] = [
                    {
                        "name": "lb",
                        "policy": "all-active",
                        "members": ["lb"],
                        "address": "127.0.0.1:1",
                        "handler": {"type": "haproxy", "frontends": lb},
                    }
                ]
            else:
                config["groups"] = [
                    {
                        "name": name,
                        "policy": "active-standby",
                        **(policy or {}),
                        "members": list(nodes),
                        "address": f"{self.hosts[node]}:{self.ports[node]}",
                        "handler": {"bind": self.hosts[node], **handler(self.ports[node])},
                    }
                ]
            (home / "agent.yaml").write_text(yaml.safe_dump(config))

    def keep_logs(self) -> Path:
        """A copy of the agents' and their servers' logs, kept after the group is removed:
        for a failure that is rare (a test's message names it)."""
        return keep_logs(self.base)

    def create_network(self) -> None:
        if self.net is not None:
            netns.create(self.net, self.nodes)

    def destroy_network(self) -> None:
        if self.net is not None:
            netns.destroy(self.net, self.nodes)

    def link(self, node: str, up: bool) -> None:
        """The member's link to the others (and to the balancer) up or down: a partition."""
        assert self.net is not None
        netns.set_link(self.net, node, "mgmt", up)

    def start(self, node: str) -> None:
        inside = netns.exec_prefix(self.net, node) if self.net and node in self.nodes else []
        with (self.base / f"{node}.log").open("ab") as log:
            self.procs[node] = subprocess.Popen(
                [*inside, sys.executable, "-m", "vimha", "agent", "--config",
                 str(self.base / node / "agent.yaml")],
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip

    def start_all(self, timeout: float = 120) -> None:
        for node in self.procs_to_start():
            self.start(node)
        until(
            lambda: sum(m.get("healthy", False) for m in self.members().values()) == 3,
            timeout,
            lambda: (self.members(), f"logs kept in {self.keep_logs()}"),
        )

    def healthy(self) -> list[str]:
        return sorted(n for n, m in self.members().items() if m.get("healthy"))

    def procs_to_start(self) -> list[str]:
        return [*self.nodes, *(["lb"] if self.lb else [])]

    def stop(self) -> None:
        stop_all(self.procs.values(), 20)

    def members(self) -> dict[str, dict[str, Any]]:
        async def read() -> dict[str, dict[str, Any]]:
            coord = open_coordination(self.url, SystemClock())
            try:
                _, entries = await coord.list(self.prefix + "members/")
                return {e.key.rsplit("/", 1)[1]: load_json(e) for e in entries}
            finally:
                await coord.close()

        return asyncio.run(read())

    def active(self) -> dict[str, Any] | None:
        found = [
            m for m in self.members().values() if m.get("role") == "active" and m.get("healthy")
        ]
        return found[0] if found else None

    def promote_the_one_behind(
        self, old: dict[str, Any], ahead: str, behind: str
    ) -> dict[str, Any]:
        """A fork: `behind` promoted although `ahead` received more. `ahead` is out of the
        running (its agent frozen), the old active's server is killed and its agent frozen
        once it has released the slot: `behind` is the only candidate. The new active."""
        frozen = [int(self.members()[ahead]["agentPid"])]
        os.kill(frozen[0], signal.SIGSTOP)
        try:
            until(lambda: ahead not in self.members(), 10)
            os.kill(int(old["pid"]), signal.SIGKILL)
            until(lambda: self.members()[old["member"]].get("slot") is None, 10)
            frozen.append(int(self.members()[old["member"]]["agentPid"]))
            os.kill(frozen[1], signal.SIGSTOP)
            new: dict[str, Any] = until(lambda: (a := self.active()) and a, 60, self.members)
            assert new["member"] == behind, new
            return new
        finally:
            for pid in frozen:
                os.kill(pid, signal.SIGCONT)

    def settled(self) -> bool:
        members = self.members().values()
        roles = sorted(str(m.get("role")) for m in members)
        return all(m.get("healthy") for m in members) and roles == ["active", "standby", "standby"]


def running_group(
    prefix: str,
    nodes: tuple[str, ...],
    handler: Callable[[int], dict[str, Any]],
    policy: dict[str, Any] | None = None,
) -> Iterator[AgentGroup]:
    """A group of real agents in a temp dir (`prefix`), every member healthy; stopped and
    removed afterwards: the body of a fixture."""
    base = Path(tempfile.mkdtemp(prefix=prefix))  # /tmp: the servers' OS users get in
    g = AgentGroup(base, nodes, handler, policy=policy)
    try:
        g.start_all()
        yield g
    finally:
        g.stop()
        shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class DbClient:
    """How a test client reaches a database group's members (DB-API, autocommit)."""

    connect: Callable[[str], Any]  # host:port -> connection
    errors: tuple[type[BaseException], ...]
    prepare: tuple[str, ...]  # on each new connection to the active
    insert: str  # one %s: the id
    is_writable: str  # one row, true on a writable primary
    epoch: str  # one row: the epoch the active wrote

    def run(self, conn: Any, sql: str, *args: object) -> list[Any]:
        cur = conn.cursor()
        try:
            cur.execute(sql, args or None)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def writable(self, g: AgentGroup) -> int:
        count = 0
        for port in g.ports.values():
            try:
                conn = self.connect(f"127.0.0.1:{port}")
            except self.errors:
                continue
            try:
                count += int(bool(self.run(conn, self.is_writable)[0][0]))
            except self.errors:
                pass
            finally:
                conn.close()
        return count

    def write_through(
        self, g: AgentGroup, fault: signal.Signals
    ) -> tuple[list[int], dict[str, Any], dict[str, Any]]:
        """Insert ids into the active without pause; after 30, `fault` its server; return
        once a new epoch's active took 30 more: (acknowledged ids, before, after)."""
        before = until(g.active)
        acked: list[int] = []
        most, conn, address, faulted, after = 0, None, None, False, None
        i = 1000 * int(before["epoch"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            i += 1
            try:
                if conn is None:
                    active = g.active()
                    if active is None:
                        time.sleep(0.05)
                        continue
                    address = active["address"]
                    conn = self.connect(address)
                    for sql in self.prepare:
                        self.run(conn, sql)
                self.run(conn, self.insert, i)
                acked.append(i)
            except self.errors:
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
            if len(acked) == 30 and not faulted:
                os.kill(int(before["pid"]), fault)
                faulted = True
            if i % 10 == 0:
                most = max(most, self.writable(g))
            if faulted and (now := g.active()) and now["epoch"] > before["epoch"]:
                after = now
                if len(acked) >= 60 and address == now["address"]:
                    break
        if conn is not None:
            conn.close()
        assert after is not None, "no new active"
        assert most <= 1, "two writable primaries at once"
        return acked, before, after

    def check_nothing_lost(self, acked: list[int], after: dict[str, Any], table: str) -> None:
        """Every acknowledged id is on the new active, which shows its epoch (written at
        promotion, maybe in the background: waited for a little)."""
        conn = self.connect(after["address"])
        try:
            have = {r[0] for r in self.run(conn, f"SELECT id FROM {table}")}
            epoch = None
            for _ in range(50):
                rows = self.run(conn, self.epoch)
                epoch = rows[0][0] if rows else None
                if epoch == after["epoch"]:
                    break
                time.sleep(0.1)
        finally:
            conn.close()
        assert set(acked) <= have, f"lost acknowledged commits: {sorted(set(acked) - have)[:10]}"
        assert epoch == after["epoch"]


class ClusterHarness(AgentGroup):
    """A cluster group (`mode: cluster`) whose members each run in a network namespace, with a
    controller that raises the group's alarms: `with h.running(): ...` brings it all up
    (every member healthy, no alarm) and down again, data and namespaces removed."""

    def __init__(self, base: Path, nodes: tuple[str, ...], **kw: Any) -> None:
        super().__init__(base, nodes, net=Netns.for_port(free_port(), ("mgmt",)), **kw)
        from tests.system.conftest import ControllerProcess

        (base / "ctl").mkdir()
        self.controller = ControllerProcess(
            base / "ctl", vim_connection_id="vimha", coordination={"url": self.url}
        )
        self.name = kw.get("name", "db")

    def alarms(self) -> list[str]:
        """The group's alarms as the controller has them raised now."""
        with self.controller.client() as c:
            found: list[str] = c.get(f"/vim/v1/service-groups/{self.name}").json()["alarms"]
        return found

    @contextlib.contextmanager
    def running(self, timeout: float = 180) -> Iterator[ClusterHarness]:
        try:
            self.create_network()
            self.controller.migrate()
            self.controller.start()
            self.start_all(timeout)
            until(
                lambda: not self.alarms(),
                30,
                lambda: (self.alarms(), self.members(), f"logs kept in {self.keep_logs()}"),
            )
            yield self
        finally:
            self.controller.stop()
            self.stop()
            self.destroy_network()
            shutil.rmtree(self.base, ignore_errors=True)
