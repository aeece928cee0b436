"""`vimha up --stateful`: the VIM's own stateful services (issue 5) on the control nodes of
the embedded cloud, run by the nodes' agents as real servers, behind the load balancers:

- `sql`: MariaDB primary and replicas (active-standby, GTID replication, semi-synchronous
  commits); the balancers send clients to the primary only;
- `galera`: a MariaDB Galera cluster of three (cluster mode); two frontends: `galera-write`
  sends every connection to one member at a time, `galera-read` to all;
- `mq`: a RabbitMQ cluster of three (cluster mode, quorum queues); frontend `mq` on the AMQP
  ports.

Member ports: PORT+500+i (sql), +510+i (galera; its gcomm, IST and SST ports +520/+530/+540),
+550+i (mq; its Erlang distribution +560) for ctl-i; the frontends on each balancer at
PORT+570.. (`frontend_port`). The Erlang cookie, a secret shared by the mq members, is kept
in the data dir (0600). It installs nothing: `missing()` names the Debian packages.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vimha.cloud.demo_groups import BALANCERS, CONTROL, GRACE, START_GRACE
from vimha.cloud.nodes import PLANES, NodePlan

OFFSETS = {"sql": 500, "galera": 510, "gcomm": 520, "ist": 530, "sst": 540, "mq": 550, "dist": 560}
FRONTENDS = ("sql", "galera-write", "galera-read", "mq")
FRONTEND_OFFSET = 570
GALERA = "/usr/lib/galera/libgalera_smm.so"
RABBITMQ = "/usr/lib/rabbitmq/bin/rabbitmq-server"
NEEDED = (
    ("mariadbd", "mariadb-server"),
    (GALERA, "galera-4"),
    ("rsync", "rsync"),
    (RABBITMQ, "rabbitmq-server"),
)


def missing() -> list[str]:
    """Debian packages `--stateful` needs that are not installed."""
    return [
        package
        for binary, package in NEEDED
        if not (Path(binary).exists() if binary.startswith("/") else shutil.which(binary))
    ]


def frontend_port(port: int, frontend: str) -> int:
    return port + FRONTEND_OFFSET + FRONTENDS.index(frontend)


def member_port(port: int, what: str, index: int) -> int:
    """index: 1 for ctl-1 ..."""
    return port + OFFSETS[what] + index


def stateful_ports(port: int) -> list[int]:
    members = [member_port(port, w, i) for w in OFFSETS for i in range(1, len(CONTROL) + 1)]
    return members + [frontend_port(port, f) for f in FRONTENDS]


def erlang_cookie(data_dir: Path) -> str:
    """The mq members' shared secret, made once and kept (0600)."""
    path = data_dir / "erlang-cookie"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(16))
    return path.read_text().strip()


@dataclass(frozen=True)
class StatefulPlan:
    port: int
    cookie: str
    netns: bool = False

    def groups(self, node: str, host: str) -> list[dict[str, Any]]:
        index = CONTROL.index(node) + 1

        def port(what: str) -> int:
            return member_port(self.port, what, index)

        members = list(CONTROL)
        galera = {"port": port("gcomm"), "ist_port": port("ist"), "sst_port": port("sst")}
        return [
            {
                "name": "sql",
                "policy": "active-standby",
                "members": members,
                "address": f"{host}:{port('sql')}",
                "monitor_grace": GRACE,
                "start_grace": START_GRACE,
                "handler": {"type": "mariadb", "port": port("sql"), "bind": host,
                            "databases": ["app"]},
            },
            {
                "name": "galera",
                "policy": "n-plus-m",
                "mode": "cluster",
                "members": members,
                "address": f"{host}:{port('galera')}",
                "monitor_grace": GRACE,
                "start_grace": START_GRACE,
                "restart_backoff": 1.0,
                "handler": {"type": "mariadb", "port": port("galera"), "bind": host,
                            "galera": galera},
            },
            {
                "name": "mq",
                "policy": "n-plus-m",
                "mode": "cluster",
                "members": members,
                "address": f"{host}:{port('mq')}",
                "monitor_grace": GRACE,
                "start_grace": START_GRACE,
                "restart_backoff": 1.0,
                "handler": {"type": "rabbitmq", "port": port("mq"), "bind": host,
                            "dist_port": port("dist"), "cookie": self.cookie},
            },
        ]  # fmt: skip

    def frontends(self, host: str) -> list[dict[str, Any]]:
        listen = "0.0.0.0" if self.netns else host

        def bind(name: str) -> str:
            return f"{listen}:{frontend_port(self.port, name)}"

        return [
            {"group": "sql", "bind": bind("sql"), "check": "tcp"},
            {"group": "galera", "name": "galera-write", "bind": bind("galera-write"),
             "balance": "one"},
            {"group": "galera", "name": "galera-read", "bind": bind("galera-read")},
            {"group": "mq", "bind": bind("mq")},
        ]  # fmt: skip

    def patch_agent(self, config: dict[str, Any], node: NodePlan) -> None:
        """On control nodes, the three groups; on the balancers, their frontends."""
        if node.name not in CONTROL:
            return
        host = node.addresses[PLANES[0]]
        config["groups"] += self.groups(node.name, host)
        if node.name in BALANCERS:
            for group in config["groups"]:
                if group["name"] == "lb":
                    group["handler"]["frontends"] += self.frontends(host)
