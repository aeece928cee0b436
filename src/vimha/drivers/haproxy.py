"""HAProxy as vimha's load balancer (issue 4, ARCH-7): its configuration (one frontend and
one backend per service group, no server: servers are added at run time), and its runtime API
on a UNIX socket (add servers, set them ready or in maintenance, read their state).

Retries: a connection refused by a dead member is retried on another (`retries`, `option
redispatch 1`); in http mode idempotent requests are retried on empty responses too."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from vimha.domain.balancing import Current
from vimha.domain.errors import Temporary


class HaproxyUnavailable(Temporary):
    """The runtime API did not answer."""


@dataclass(frozen=True, slots=True)
class Frontend:
    group: str
    bind: str  # host:port
    mode: str = "tcp"  # tcp or http
    check: str = "tcp"  # tcp, http (GET path, 2xx) or redis (PING, and role:master)
    path: str = "/"
    inter_ms: int = 200
    fall: int = 2
    rise: int = 1
    server_timeout_ms: int = 30000  # a server silent this long: retried elsewhere (http)
    name: str = ""  # default: the group's
    one: bool = False  # a single ready server at a time

    @property
    def label(self) -> str:
        return self.name or self.group

    @property
    def backend(self) -> str:
        return f"be_{self.label}"

    def server_options(self) -> str:
        # tcp: a server found dead by the check loses its sessions at once, so that its clients
        # reconnect to another (a member cut off would otherwise hold them until their own
        # timeouts). http: a request in flight is left to finish, or to time out and be retried
        # on another server; cutting it would fail the client's request (bench/switchover.py)
        check = f"check inter {self.inter_ms} fall {self.fall} rise {self.rise}"
        return check + " on-marked-down shutdown-sessions" if self.mode == "tcp" else check


def render(
    frontends: list[Frontend],
    socket: Path,
    connect_timeout_ms: int = 50,
    check_timeout_ms: int = 200,
) -> str:
    """The configuration. `connect_timeout_ms` is also the pause HAProxy makes before it
    retries a backend that has a single ready server (its turn-around timer, min(timeout
    connect, 1 s)): a client of an active-standby group that reconnects while the dead
    active is still listed waits it out once (200 ms made the Redis client's outage ~225 ms
    for a switch-over done in ~65 ms; 50 ms: ~78 ms)."""
    lines = [
        "global",
        f"    stats socket {socket} mode 600 level admin",
        "    log stderr format short local0 warning",
        "defaults",
        "    log global",
        "    mode tcp",
        f"    timeout connect {connect_timeout_ms}ms",
        "    timeout client 60s",
        "    timeout server 60s",
        f"    timeout check {check_timeout_ms}ms",
        "    retries 3",
        "    option redispatch 1",
    ]
    for f in frontends:
        lines += [
            f"frontend fe_{f.label}",
            f"    mode {f.mode}",
            f"    bind {f.bind}",
            f"    default_backend {f.backend}",
            f"backend {f.backend}",
            f"    mode {f.mode}",
            "    balance roundrobin",
            f"    timeout server {f.server_timeout_ms}ms",
        ]
        if f.mode == "http":
            lines.append("    retry-on conn-failure empty-response response-timeout")
        if f.check == "http":
            lines += [f"    option httpchk GET {f.path}", "    http-check expect status 200"]
        elif f.check == "redis":
            lines += [
                "    option tcp-check",
                "    tcp-check send PING\\r\\n",
                "    tcp-check expect string +PONG",
                "    tcp-check send info\\ replication\\r\\n",
                "    tcp-check expect string role:master",
                "    tcp-check send QUIT\\r\\n",
            ]
    return "\n".join(lines) + "\n"


class HaproxyAdmin:
    def __init__(self, socket: Path, timeout: float = 1.0) -> None:
        self.socket = socket
        self.timeout = timeout

    async def run(self, command: str) -> str:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_unix_connection(str(self.socket))
                writer.write(command.encode() + b"\n")
                await writer.drain()
                out = await reader.read()
                writer.close()
        except (OSError, TimeoutError) as exc:
            raise HaproxyUnavailable(f"haproxy runtime API {self.socket}: {exc}") from exc
        return out.decode(errors="replace")

    async def servers(self, backend: str) -> dict[str, Current]:
        """The backend's servers as HAProxy has them: address and whether ready (not in
        maintenance)."""
        text = await self.run(f"show servers state {backend}")
        out = {}
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 19 or not fields[0].isdigit():
                continue
            name, addr, admin, port = fields[3], fields[4], int(fields[6]), fields[18]
            out[name] = Current(f"{addr}:{port}", admin & 0x01 == 0 and admin & 0x20 == 0)
        return out
