"""The handler registry: which handler runs a group's member, from its configuration, and
what its server needs of the host (UNIX socket paths), checked when the agent's config is
loaded. Kept apart from `agent/handlers.py`, the kit every handler is built from, which
imports none of them (the handlers import it).

A handler's module is imported when a group needs it: an agent that runs no database does
not load their drivers (about 10 MB and 0.15 s at each agent's start).
"""

from __future__ import annotations

from pathlib import Path

from vimha.agent.handlers import Handler, ProcessHandler
from vimha.drivers.coord_mirror import Mirror
from vimha.groupspec import (
    GroupConfig,
    HaproxyHandlerConfig,
    KeepalivedHandlerConfig,
    MariadbHandlerConfig,
    PostgresHandlerConfig,
    RabbitmqHandlerConfig,
    RedisHandlerConfig,
    SdnHandlerConfig,
    VipHandlerConfig,
)
from vimha.ports.coordination import Coordination

MAX_UNIX_SOCKET_PATH = 107  # bytes: sun_path holds 108, with the final NUL


def unix_sockets(spec: GroupConfig, run_dir: Path) -> list[Path]:
    """The UNIX sockets a member's server binds (HAProxy's admin socket is aliased when too
    long: not among them)."""
    cfg = spec.handler
    if isinstance(cfg, PostgresHandlerConfig):
        from vimha.agent.pg_handler import socket_file

        return [socket_file(spec.name, cfg, run_dir)]
    if isinstance(cfg, MariadbHandlerConfig):
        from vimha.agent.mariadb_handler import server_home

        return [server_home(spec.name, cfg, run_dir) / "mysqld.sock"]
    return []


def too_long_sockets(spec: GroupConfig, run_dir: Path) -> str | None:
    """Why the member's server could not bind its UNIX socket (a path over 107 bytes: the
    server refuses to start), or None."""
    for path in unix_sockets(spec, run_dir):
        if (size := len(str(path).encode())) > MAX_UNIX_SOCKET_PATH:
            where = "run_dir or handler.data_dir" if spec.handler.type == "mariadb" else "run_dir"
            return (
                f"its server's socket {path} would be {size} bytes, more than a UNIX socket "
                f"path holds ({MAX_UNIX_SOCKET_PATH}): choose a shorter {where}"
            )
    return None


def make_handler(
    spec: GroupConfig,
    node: str,
    run_dir: Path,
    coord: Coordination,
    vim: str,
    mirror: Mirror | None = None,
) -> Handler:
    group, cfg = spec.name, spec.handler
    if isinstance(cfg, MariadbHandlerConfig) and spec.mode == "cluster":
        from vimha.agent.galera_handler import GaleraHandler

        return GaleraHandler(group, node, cfg, run_dir, coord, vim, spec.members, mirror)
    if isinstance(cfg, RedisHandlerConfig):
        from vimha.agent.redis_handler import RedisHandler

        return RedisHandler(group, cfg, run_dir)
    if isinstance(cfg, PostgresHandlerConfig):
        from vimha.agent.pg_handler import PostgresHandler

        return PostgresHandler(group, node, cfg, run_dir, coord, vim)
    if isinstance(cfg, MariadbHandlerConfig):
        from vimha.agent.mariadb_handler import MariadbHandler

        return MariadbHandler(group, node, cfg, run_dir, coord, vim)
    if isinstance(cfg, VipHandlerConfig):
        from vimha.agent.vrrp import VipHandler

        return VipHandler(group, cfg)
    if isinstance(cfg, KeepalivedHandlerConfig):
        from vimha.agent.vrrp import KeepalivedHandler

        return KeepalivedHandler(group, node, cfg, run_dir, vim, mirror)
    if isinstance(cfg, HaproxyHandlerConfig):
        from vimha.agent.balancer import HaproxyHandler

        return HaproxyHandler(group, cfg, run_dir, coord, vim, mirror)
    if isinstance(cfg, RabbitmqHandlerConfig):
        from vimha.agent.rabbitmq_handler import RabbitmqHandler

        return RabbitmqHandler(group, node, cfg, run_dir, coord, vim, spec.members, mirror)
    if isinstance(cfg, SdnHandlerConfig):
        from vimha.agent.sdn_handler import SdnHandler
        from vimha.domain.groups import Policy
        from vimha.domain.sdn import Model

        model = Model.DISTRIBUTED if spec.policy is Policy.ALL_ACTIVE else Model.CENTRALISED
        return SdnHandler(group, node, cfg, run_dir, coord, vim, model, mirror)
    return ProcessHandler(group, cfg)
