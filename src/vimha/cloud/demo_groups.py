"""The embedded cloud's three demo service groups on the control nodes, one per policy (issue
4), so that anyone can watch each: `api` (all-active, 3 members), `kv` (active-standby: Redis
when redis-server is installed, else a demo member with the same promote/demote contract)
and `workers` (n-plus-m, 2 active + 1 standby). Members listen on the node's mgmt address.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from vimha.cloud.netns import Netns

GROUPS = ("api", "kv", "workers")
OFFSETS = {"api": 300, "kv": 310, "workers": 320}
# s a database or broker member may be slow to answer its checks before it counts as failed:
# a switch-over of the primary re-seeds the old one, a restarted Galera or RabbitMQ member
# transfers its state; and a standby passed over for a slow answer may be the freshest, with
# commits acknowledged by it alone. 5 s: on a loaded 2-core box a primary promoted moments
# before, busy re-seeding the old one that rejoins, went 2 s without an answer (a switch-over
# with no fault); a process gone or stopped still counts at once, a dead node is fenced.
GRACE = 5.0
# Databases and brokers of the embedded clouds: slow answers while a member is still starting
# (the whole box starts at once: 11 agents, 3 controllers, etcd, the servers) do not depose
# it (issue 22: `sql` switched over at start-up with no fault, "no answer in time", 2.1 s).
START_GRACE = 30.0
CONTROL = ("ctl-1", "ctl-2", "ctl-3")
BALANCERS = ("ctl-1", "ctl-2")  # the load-balancer pair
VIP_INDEX = 250  # the balancers' virtual IP: .250 of the mgmt plane (netns mode)
LB_OFFSET = 330  # + the group's index in GROUPS: its frontend port on each balancer


def frontend_port(port: int, group: str) -> int:
    return port + LB_OFFSET + GROUPS.index(group)


def member_port(port: int, group: str, index: int) -> int:
    """index: 1 for ctl-1 ..."""
    return port + OFFSETS[group] + index


def group_ports(port: int) -> list[int]:
    members = [member_port(port, g, i) for g in GROUPS for i in range(1, len(CONTROL) + 1)]
    return members + [frontend_port(port, g) for g in GROUPS]


def _demo(port: int, host: str, node: str, group: str, role_file: Path | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "vimha.cloud.demo_service", "--host", host, "--port", str(port),
            "--node", node, "--service", f"group-{group}"]  # fmt: skip
    handler: dict[str, Any] = {
        "type": "process",
        "command": argv,
        "check": "http",
        "target": f"http://{host}:{port}/",
        "timeout": 0.3,
    }
    if role_file is not None:
        argv += ["--role-file", str(role_file)]
        handler["promote"] = ["sh", "-c", f'echo "active $VIMHA_EPOCH" > {role_file}']
        handler["demote"] = ["sh", "-c", f'echo "standby $VIMHA_ACTIVE" > {role_file}']
    return handler


def vip(net: Netns) -> str:
    """In netns mode, the balancers' virtual IP on the mgmt plane."""
    return net.node_address("mgmt", VIP_INDEX)


def demo_groups(
    node: str, host: str, port: int, home: Path, net: Netns | None = None
) -> list[dict[str, Any]]:
    """The groups' declarations for control node `node`, whose mgmt address is `host`. In
    netns mode the balancers listen on every address of their namespace and keepalived holds
    a virtual IP for the pair (group `vip`)."""
    if node not in CONTROL:
        return []
    index = CONTROL.index(node) + 1
    members = list(CONTROL)

    def address(group: str) -> str:
        return f"{host}:{member_port(port, group, index)}"

    kv_port = member_port(port, "kv", index)
    redis = shutil.which("redis-server")
    kv_handler = (
        {"type": "redis", "port": kv_port, "bind": host, "server": redis,
         "data_dir": str(home / "redis-kv")}
        if redis
        else _demo(kv_port, host, node, "kv", home / "kv.role")
    )  # fmt: skip
    balancer = []
    listen = "0.0.0.0" if net else host
    if net is not None and node in BALANCERS and shutil.which("keepalived"):
        balancer.append(
            {
                "name": "vip",
                "policy": "all-active",
                "members": list(BALANCERS),
                "address": f"{vip(net)}:{frontend_port(port, 'api')}",
                "handler": {
                    "type": "keepalived",
                    "interface": "mgmt",
                    "vip": f"{vip(net)}/24",
                    "router_id": 50 + net.octet % 200,
                    "priority": 110 - 10 * BALANCERS.index(node),
                    # the address goes where a balancer serves
                    **({"track": "lb"} if shutil.which("haproxy") else {}),
                },
            }
        )
    if node in BALANCERS and shutil.which("haproxy"):
        frontends = [
            {"group": "api", "bind": f"{listen}:{frontend_port(port, 'api')}", "mode": "http",
             "check": "http", "server_timeout": 1.0},
            {"group": "kv", "bind": f"{listen}:{frontend_port(port, 'kv')}",
             "check": "redis" if redis else "tcp"},
            {"group": "workers", "bind": f"{listen}:{frontend_port(port, 'workers')}",
             "mode": "http", "check": "http", "server_timeout": 1.0},
        ]  # fmt: skip
        balancer.append(
            {
                "name": "lb",
                "policy": "all-active",
                "members": list(BALANCERS),
                "address": f"{host}:{frontend_port(port, 'api')}",
                "handler": {"type": "haproxy", "frontends": frontends},
            }
        )
    return [
        *balancer,
        {
            "name": "api",
            "policy": "all-active",
            "members": members,
            "address": address("api"),
            "handler": _demo(member_port(port, "api", index), host, node, "api", None),
        },
        {
            "name": "kv",
            "policy": "active-standby",
            "members": members,
            "address": address("kv"),
            "handler": kv_handler,
        },
        {
            "name": "workers",
            "policy": "n-plus-m",
            "active": 2,
            "members": members,
            "address": address("workers"),
            "handler": _demo(
                member_port(port, "workers", index), host, node, "workers", home / "workers.role"
            ),
        },
    ]
