"""`vimha up --ha`: the embedded cloud with no single point of failure in its control plane
(issue 4, ARCH-1). On the three control nodes:

- an etcd member each (3-member cluster, sub-second elections): the controllers' and the
  agents' coordination backend; it dies with its node (the launcher runs it as the node's).
  Its authentication is enabled once it answers (issue 22): each agent and each controller
  has an etcd user of its own (passwords in <data>/etcd-auth/, 0600), an agent's role may
  write only the keys of the groups its node is a member of (vimha/etcdaccess.py);
- `db`: the controllers' PostgreSQL, an active-standby group run by the agents (synchronous
  standby, fencing-token epoch), reached through the load balancers (only the active is a
  server of its backend);
- `vimha`: the controllers themselves, an all-active group run by the agents, each on its
  node's plane addresses (heartbeats on both planes: the management network is redundant),
  behind the load balancers at 127.0.0.1:PORT (both HAProxy members bind it with
  SO_REUSEPORT, so either serves it alone: the loopback stand-in for the VIP of netns mode);
- the demo groups of `vimha up` (api, kv, workers) and the HAProxy pair `lb`.

It installs nothing: `missing()` names the Debian packages to install.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import logging
import os
import pwd
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import yaml

from vimha.cloud.demo_groups import BALANCERS, CONTROL, GRACE, START_GRACE
from vimha.cloud.etcd import member_argv
from vimha.cloud.nodes import EMBEDDED_VIM, PLANES, NodePlan, agent_tokens, host_inventory
from vimha.cloud.tokens import role_tokens
from vimha.domain.errors import Permanent, Temporary
from vimha.drivers.etcd_access import apply_access, password_file, password_files
from vimha.etcdaccess import (
    ROOT,
    AccessPlan,
    AgentAccess,
    GroupAccess,
    agent_user,
    controller_user,
    plan_for,
)

log = logging.getLogger("vimha.cloud")

ETCD_OFFSET = 400  # client port PORT+400, peer port PORT+401, on each control node's address
DB_OFFSET = 340  # the db member of ctl-i on PORT+340+i; its frontend on each balancer: +344
DB_FRONTEND = 344
NEEDED = (("etcd", "etcd-server"), ("haproxy", "haproxy"), ("postgres", "postgresql"))
ETCD_AUTH_DIR = "etcd-auth"  # under the data dir: a password file per etcd user (0600)


def missing() -> list[str]:
    """Debian packages `--ha` needs that are not installed."""
    out = []
    for binary, package in NEEDED:
        found = shutil.which(binary)
        if binary == "postgres" and not found:
            found = next(iter(glob.glob("/usr/lib/postgresql/*/bin/postgres")), None)
        if not found:
            out.append(package)
    return out


def ha_ports(port: int) -> list[int]:
    return [
        port + ETCD_OFFSET,
        port + ETCD_OFFSET + 1,
        *(port + DB_OFFSET + i for i in range(1, len(CONTROL) + 1)),
        port + DB_FRONTEND,
    ]


def check_reachable(data_dir: Path) -> None:
    """As root, PostgreSQL runs as `postgres`: every folder above its data must let it in."""
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Permanent("--ha as root needs the `postgres` OS user (apt: postgresql)") from None
    for folder in [data_dir, *data_dir.parents]:
        if folder.exists() and not folder.stat().st_mode & 0o001:
            raise Permanent(
                f"--ha: {folder} is not reachable by the postgres user, which runs the "
                f"controllers' database under {data_dir}: chmod o+x {folder}, or choose "
                "another --data-dir (e.g. under /tmp)"
            )


@dataclass(frozen=True, slots=True)
class HaPlan:
    data_dir: Path
    port: int
    nodes: tuple[NodePlan, ...]
    token_file: Path

    @property
    def control(self) -> list[NodePlan]:
        return [n for n in self.nodes if n.name in CONTROL]

    def host(self, node: NodePlan) -> str:
        return node.addresses[PLANES[0]]

    @property
    def etcd_url(self) -> str:
        return "etcd://" + ",".join(
            f"{self.host(n)}:{self.port + ETCD_OFFSET}" for n in self.control
        )

    @property
    def store_url(self) -> str:
        """Through either load balancer to the db group's active."""
        hosts = [self.host(n) for n in self.control if n.name in BALANCERS]
        ports = [str(self.port + DB_FRONTEND)] * len(hosts)
        return (
            f"postgresql+psycopg://postgres@/vimha?host={','.join(hosts)}"
            f"&port={','.join(ports)}&connect_timeout=2"
        )

    def password_file(self, user: str) -> Path:
        return password_file(self.data_dir / ETCD_AUTH_DIR, user)

    def etcd_url_of(self, user: str) -> str:
        """The etcd URL with the credential of `user` (its password file)."""
        query = urlencode({"user": user, "password_file": self.password_file(user)}, safe="/")
        return f"{self.etcd_url}?{query}"

    def access_plan(self, configs: Mapping[str, Path]) -> AccessPlan:
        """Who may write what in etcd, from the agents' configs as written (their groups:
        the demo ones, db and vimha, and those of --stateful)."""
        agents = []
        for node, path in configs.items():
            config = yaml.safe_load(path.read_text())
            if not str(config.get("coordination_url", "")).startswith("etcd://"):
                continue  # not an etcd client (its groups, if any, are elsewhere)
            groups = tuple(
                GroupAccess(g["name"], tuple(g["members"]), g["handler"]["type"] == "sdn")
                for g in config.get("groups") or ()
            )
            agents.append(AgentAccess(node, groups, bool(config.get("switch"))))
        return plan_for(EMBEDDED_VIM, agents, [n.name for n in self.control])

    def passwords(self, plan: AccessPlan) -> dict[str, str]:
        """Each user's password (and root's), made (0600) where there is none yet."""
        users = [ROOT, *(u.name for u in plan.users)]
        return password_files(self.data_dir / ETCD_AUTH_DIR, users)

    async def secure_etcd(
        self, plan: AccessPlan, passwords: Mapping[str, str], stop: asyncio.Event
    ) -> None:
        """Once etcd answers: its users, roles and authentication (idempotent: a restart
        of the cloud applies the same plan again). Until then the clients, their users
        named, call without a token, as etcd's own client does; then they authenticate."""
        while not stop.is_set():
            try:
                done = await apply_access(self.etcd_url_of(ROOT), plan, passwords)
            except Temporary as exc:
                log.info("etcd access not applied yet: %s", exc)
            except Permanent as exc:
                log.error("etcd access not applied: %s", exc)
                return
            else:
                log.info("etcd access applied: %s", "; ".join(done) or "no change")
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)

    def heartbeat_addresses(self, node: NodePlan) -> dict[str, str]:
        """Where the controller on control node `node` hears each plane."""
        return {
            plane: f"{node.addresses[plane]}:{self.port + 1 + j}" for j, plane in enumerate(PLANES)
        }

    def etcd_argv(self, node: NodePlan) -> list[str]:
        client, peer = self.port + ETCD_OFFSET, self.port + ETCD_OFFSET + 1
        cluster = ",".join(f"{n.name}=http://{self.host(n)}:{peer}" for n in self.control)
        return member_argv(
            node.name,
            self.data_dir / "nodes" / node.name / "etcd",
            self.host(node),
            client,
            peer,
            cluster,
            self.host(node),
        )

    def controller_config(self, node: NodePlan) -> dict[str, Any]:
        listen = self.heartbeat_addresses(node)
        return {
            "vim_connection_id": EMBEDDED_VIM,
            "controller_name": node.name,
            "data_dir": str(self.data_dir / "nodes" / node.name / "controller"),
            "log_level": "info",
            "api": {
                "host": self.host(node),
                "port": self.port,
                "public_url": f"http://127.0.0.1:{self.port}",
            },
            "store": {"url": self.store_url},
            "auth": {
                "token_file": str(self.token_file),
                "tokens": [*agent_tokens(list(self.nodes)), *role_tokens(self.data_dir)],
            },
            "coordination": {
                "url": self.etcd_url_of(controller_user(EMBEDDED_VIM, node.name)),
                "controllers": len(self.control),
            },
            "heartbeat": {"listen": listen, "startup_grace": 15},
            "hosts": host_inventory(list(self.nodes)),
        }

    def patch_agent(self, config: dict[str, Any], node: NodePlan) -> None:
        """Heartbeats to every controller on every plane; the API through the balancers; on
        control nodes, etcd and the db and vimha groups."""
        targets = [self.heartbeat_addresses(c) for c in self.control]
        for plane in config["planes"]:
            plane["controller"] = [t[plane["name"]] for t in targets]
        config["controller_url"] = f"http://127.0.0.1:{self.port}"
        if node.name not in CONTROL:
            return
        config["coordination_url"] = self.etcd_url_of(agent_user(EMBEDDED_VIM, node.name))
        home = self.data_dir / "nodes" / node.name
        index = CONTROL.index(node.name) + 1
        host = self.host(node)
        db_port = self.port + DB_OFFSET + index
        controller_yaml = home / "controller.yaml"
        log = home / "controller.log"
        command = (
            f"exec {sys.executable} -m vimha controller --config {controller_yaml} "
            f"--migrate --wait-store 60 >> {log} 2>&1"
        )
        config["groups"] += [
            {
                "name": "db",
                "policy": "active-standby",
                "members": list(CONTROL),
                "monitor_grace": GRACE,
                "start_grace": START_GRACE,
                "address": f"{host}:{db_port}",
                "handler": {
                    "type": "postgresql",
                    "port": db_port,
                    "bind": host,
                    "databases": ["vimha"],
                },
            },
            {
                "name": "vimha",
                "policy": "all-active",
                "members": list(CONTROL),
                "address": f"{host}:{self.port}",
                # A controller waits for its database at start: not restarted meanwhile.
                "restart_backoff": 30,
                "handler": {
                    "type": "process",
                    "command": ["sh", "-c", command],
                    "check": "http",
                    "target": f"http://{host}:{self.port}/vimfm/api_versions",
                    "timeout": 1.0,
                },
            },
        ]
        for group in config["groups"]:
            if group["name"] == "lb":
                group["handler"]["frontends"] += [
                    {"group": "db", "bind": f"{host}:{self.port + DB_FRONTEND}", "check": "tcp"},
                    {
                        "group": "vimha",
                        "bind": f"127.0.0.1:{self.port}",
                        "mode": "http",
                        "check": "http",
                        "path": "/vimfm/api_versions",
                        "server_timeout": 10.0,
                    },
                ]
