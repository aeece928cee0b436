"""`vimha up`: the embedded default: a controller with SQLite in the data dir, and 8 nodes
(agents on two loopback planes, one demo service and one simulated Redfish BMC each, kept
alive by a launcher)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from vimha.cloud.ha import HaPlan, check_reachable, ha_ports, missing
from vimha.cloud.netns import Netns, create
from vimha.cloud.netns import available as netns_available
from vimha.cloud.nodes import (
    EMBEDDED_VIM,
    PLANES,
    Launcher,
    NodePlan,
    check_ports,
    controller_host,
    coordination_url,
    host_inventory,
    listen_addresses,
    plan,
    write_agent_config,
    write_state,
)
from vimha.cloud.stateful import StatefulPlan, erlang_cookie, stateful_ports
from vimha.cloud.stateful import missing as stateful_missing
from vimha.config import Config, load
from vimha.domain.errors import Permanent
from vimha.osuser import reach_hint


def embedded_config(
    data_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    nodes: list[NodePlan] | None = None,
    net: Netns | None = None,
) -> Config:
    data_dir = data_dir.resolve()
    overrides: dict[str, Any] = {
        "vim_connection_id": EMBEDDED_VIM,
        "coordination": {"url": coordination_url(data_dir)},
        "data_dir": str(data_dir),
        "api": {
            "host": host,
            "port": port,
            # In netns mode the agents reach the API on the mgmt bridge too.
            "also_listen": [controller_host(net)] if net else [],
        },
        "store": {"url": f"sqlite:///{data_dir / 'vimha.db'}"},
        "auth": {"token_file": str(data_dir / "admin-token")},
    }
    if nodes:
        # Eight agents starting at once on a small machine take a few seconds.
        overrides["heartbeat"] = {"listen": listen_addresses(port, net), "startup_grace": 10}
        overrides["hosts"] = host_inventory(nodes)
    return load(None, overrides)


def prepare_cloud(
    data_dir: Path,
    port: int,
    token: str,
    netns: bool = False,
    ha: bool = False,
    stateful: bool = False,
) -> tuple[Config, Launcher]:
    """Plan the nodes, write their agents' configs and the state `vimha chaos` reads; in
    netns mode, create the namespaces, links and bridges. With `ha`, the control plane is
    run by the control nodes (see cloud/ha.py); with `stateful`, MariaDB and RabbitMQ groups
    too (cloud/stateful.py)."""
    data_dir = data_dir.resolve()
    check_ports(
        port, [*(ha_ports(port) if ha else []), *(stateful_ports(port) if stateful else [])]
    )
    if stateful and (needed := stateful_missing()):
        raise Permanent(
            f"--stateful needs {', '.join(needed)}: apt-get install {' '.join(needed)} "
            "(vimha up installs nothing by itself; `make up` does)"
        )
    if stateful and os.geteuid() == 0:  # the servers run as their own users
        for user in ("mysql", "rabbitmq"):
            if (why := reach_hint(data_dir / "nodes" / "ctl-1", user)) is not None:
                raise Permanent(f"--stateful: {why}; or another --data-dir")
    net = None
    if netns:
        if ha:
            raise Permanent("--ha runs on loopback; --ha with --netns is not supported yet")
        if (why := netns_available()) is not None:
            raise Permanent(f"--netns: {why}")
        net = Netns.for_port(port, PLANES)
    if ha:
        if needed := missing():
            raise Permanent(
                f"--ha needs {', '.join(needed)}: apt-get install {' '.join(needed)} "
                "(vimha up installs nothing by itself)"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        check_reachable(data_dir)
    nodes = plan(data_dir, port, net)
    config = embedded_config(data_dir, port, nodes=nodes, net=net)
    layout = (
        HaPlan(data_dir, port, tuple(nodes), Path(config.auth.token_file or "")) if ha else None
    )
    patches: list[Callable[[dict[str, Any], NodePlan], None]] = []
    if layout is not None:
        patches.append(layout.patch_agent)
    if stateful:
        data_dir.mkdir(parents=True, exist_ok=True)
        patches.append(StatefulPlan(port, erlang_cookie(data_dir), netns).patch_agent)

    def patch(config: dict[str, Any], node: NodePlan) -> None:
        for each in patches:
            each(config, node)

    configs = {n.name: write_agent_config(data_dir, n, port, token, net, patch) for n in nodes}
    extras: dict[str, list[tuple[str, list[str]]]] = {}
    if layout is not None:
        for n in layout.control:
            home = data_dir / "nodes" / n.name
            (home / "controller.yaml").write_text(yaml.safe_dump(layout.controller_config(n)))
            os.chmod(home / "controller.yaml", 0o600)  # it holds the BMC credentials
            extras[n.name] = [("etcd", layout.etcd_argv(n))]
    write_state(data_dir, nodes, net)
    (data_dir / "logs").mkdir(exist_ok=True)
    if net is not None:
        create(net, [n.name for n in nodes])
    return config, Launcher(configs, data_dir / "logs", nodes, net, extras)


async def run_cloud(config: Config, launcher: Launcher) -> int:
    """The controller and the nodes' agents (with their demo services), until a signal."""
    from vimha.controller import serve

    stop = asyncio.Event()
    launcher.start_bmcs()  # before the controller: a BMC that cannot start stops `vimha up`
    task = asyncio.create_task(launcher.run(stop))
    try:
        return await serve(config, migrate=True)
    finally:
        stop.set()
        await task
        await asyncio.to_thread(launcher.stop)


async def run_ha_cloud(launcher: Launcher) -> int:
    """`vimha up --ha`: the nodes only; their agents run the controllers. Until a signal."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    launcher.start_bmcs()
    try:
        await launcher.run(stop)
    finally:
        await asyncio.to_thread(launcher.stop)
    return 0


def pid_file(data_dir: Path) -> Path:
    return data_dir / "vimha.pid"


def running_pid(data_dir: Path) -> int | None:
    """The pid of a detached `vimha up` that is alive (not a zombie), else None."""
    try:
        pid = int(pid_file(data_dir).read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state in ("Z", "X") else pid


def detach(
    data_dir: Path,
    port: int,
    timeout: float | None = None,
    netns: bool = False,
    ha: bool = False,
    stateful: bool = False,
) -> int:
    """Start `vimha up` in the background, wait until it answers; returns its pid."""
    # With --ha the API answers once etcd, the database and a controller are up.
    timeout = timeout or (120.0 if ha else 30.0)
    if (pid := running_pid(data_dir)) is not None:
        raise Permanent(f"vimha is already running from {data_dir} (pid {pid}); `vimha down` first")
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir / "vimha.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vimha",
            "up",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            *(["--netns"] if netns else []),
            *(["--ha"] if ha else []),
            *(["--stateful"] if stateful else []),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file(data_dir).write_text(f"{proc.pid}\n")
    url = f"http://127.0.0.1:{port}/vimfm/api_versions"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Permanent(f"vimha up exited with {proc.returncode}; see {data_dir / 'vimha.log'}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return proc.pid
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise Permanent(f"vimha up did not answer within {timeout:.0f}s; see {data_dir / 'vimha.log'}")


def down(data_dir: Path, timeout: float = 15.0) -> int | None:
    """Stop a detached `vimha up`: SIGTERM, then SIGKILL after `timeout`. Returns the pid."""
    pid = running_pid(data_dir)
    if pid is None:
        pid_file(data_dir).unlink(missing_ok=True)
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and running_pid(data_dir) == pid:
        time.sleep(0.1)
    if running_pid(data_dir) == pid:
        os.kill(pid, signal.SIGKILL)
    pid_file(data_dir).unlink(missing_ok=True)
    return pid
