"""`vimha up`: the embedded default: a controller with SQLite in the data dir, and 8 nodes
(agents on two loopback planes, one demo service and one simulated Redfish BMC each, kept
alive by a launcher)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import yaml

from vimha.cloud import demo_vnfs, qemu_mode
from vimha.cloud import sdn as cloud_sdn
from vimha.cloud.ha import HaPlan, check_reachable, ha_ports, missing
from vimha.cloud.netns import (
    Netns,
    create,
    create_vnf_networks,
    destroy_vnf_networks,
    vnf_bridge,
)
from vimha.cloud.netns import available as netns_available
from vimha.cloud.nodes import (
    EMBEDDED_VIM,
    PLANES,
    Launcher,
    NodePlan,
    agent_tokens,
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
from vimha.cloud.tokens import role_tokens
from vimha.config import Config, load
from vimha.domain.errors import Permanent
from vimha.drivers.tls import client_tls
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
        "auth": {"token_file": str(data_dir / "admin-token"), "tokens": role_tokens(data_dir)},
    }
    if nodes:
        # Eight agents starting at once on a small machine take a few seconds.
        overrides["heartbeat"] = {"listen": listen_addresses(port, net), "startup_grace": 10}
        overrides["hosts"] = host_inventory(nodes)
        overrides["auth"]["tokens"] += agent_tokens(nodes)
    return load(None, overrides)


def prepare_cloud(
    data_dir: Path,
    port: int,
    netns: bool = False,
    ha: bool = False,
    stateful: bool = False,
    sdn: str = "centralised",
    libvirt: bool = False,
) -> tuple[Config, Launcher]:
    """Plan the nodes, write their agents' configs and the state `vimha chaos` reads; in
    netns mode, create the namespaces, links and bridges. With `ha`, the control plane is
    run by the control nodes (see cloud/ha.py); with `stateful`, MariaDB and RabbitMQ groups
    too (cloud/stateful.py); in netns mode with Open vSwitch installed, the SDN controller's
    `sdn` model (centralised, distributed or off: cloud/sdn.py); with `libvirt`, the
    instances are QEMU guests (cloud/qemu_mode.py)."""
    data_dir = data_dir.resolve()
    # flags that do not go together are said first, whatever the machine has free
    if libvirt and netns:
        raise Permanent("--libvirt uses the host's bridges: not with --netns")
    if ha and netns:
        raise Permanent("--ha runs on loopback; --ha with --netns is not supported yet")
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
    if libvirt and (why := qemu_mode.available()) is not None:
        raise Permanent(f"--libvirt: {why}")
    net = None
    if netns:
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
    if sdn not in cloud_sdn.MODELS:
        raise Permanent(f"--sdn {sdn}: use {', '.join(cloud_sdn.MODELS)}")
    qemu = qemu_mode.QemuPlan(port, data_dir) if libvirt else None
    if qemu is not None:
        patches.append(qemu.patch_agent)
    sdn_plan = None
    if net is not None and sdn != "off" and cloud_sdn.available() is None:
        sdn_plan = cloud_sdn.SdnPlan(sdn, port, net, data_dir)
        patches.append(sdn_plan.patch_agent)  # the guests' ports on the nodes' switches
    elif net is not None:
        patches.append(vnf_bridges)  # on the nodes' Linux bridges

    def patch(config: dict[str, Any], node: NodePlan) -> None:
        for each in patches:
            each(config, node)

    configs = {n.name: write_agent_config(data_dir, n, port, net, patch) for n in nodes}
    extras: dict[str, list[tuple[str, list[str]]]] = {}
    background: list[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = []
    if layout is not None:
        access = layout.access_plan(configs)
        passwords = layout.passwords(access)  # before the agents start: they read theirs
        background.append(functools.partial(layout.secure_etcd, access, passwords))
        for n in layout.control:
            home = data_dir / "nodes" / n.name
            (home / "controller.yaml").write_text(yaml.safe_dump(layout.controller_config(n)))
            os.chmod(home / "controller.yaml", 0o600)  # it holds the BMC credentials
            extras[n.name] = [("etcd", layout.etcd_argv(n))]
    write_state(data_dir, nodes, net)
    (data_dir / "api-url").write_text(f"http://127.0.0.1:{port}\n")
    from vimha.admin_token import admin_token_from_file  # the controller's, made if missing

    token = admin_token_from_file(Path(config.auth.token_file or data_dir / "admin-token"))
    write_clouds_yaml(data_dir, f"http://127.0.0.1:{port}", token)
    (data_dir / "logs").mkdir(exist_ok=True)
    if net is not None:
        create(net, [n.name for n in nodes])
    launcher = Launcher(configs, data_dir / "logs", nodes, net, extras)
    launcher.background += background
    if net is not None and sdn_plan is None:
        computes = [(i, n.name) for i, n in enumerate(nodes, start=1) if "compute" in n.roles]
        networks = list(demo_vnfs.NETNS_NETWORKS)
        launcher.cleanups.append(functools.partial(destroy_vnf_networks, net, computes, networks))
        create_vnf_networks(net, computes, networks)
    if qemu is not None:
        qemu.prepare()
        launcher.qemu_image = qemu.image
        names = [n.name for n in nodes]
        launcher.cleanups.append(lambda: qemu.destroy(names))
    if sdn_plan is not None and net is not None:
        cloud_sdn.prepare(sdn, port, net, data_dir, nodes)
        launcher.cleanups.append(lambda: cloud_sdn.destroy(net, nodes))
    launcher.token = token
    return config, launcher


def vnf_bridges(config: dict[str, Any], node: NodePlan) -> None:
    """A compute node's guests in network namespaces of their own (netns mode, no SDN): each
    port on the node's Linux bridge for its network (cloud/netns.py)."""
    if "hypervisor" in config:
        config["hypervisor"]["bridges"] = {n: vnf_bridge(n) for n in demo_vnfs.NETNS_NETWORKS}


def clouds_yaml(url: str, token: str) -> dict[str, Any]:
    """An openstacksdk / `openstack` CLI configuration for the cloud (issue 16): user admin,
    whose password is the admin token, in project admin, through the Identity face."""
    return {
        "clouds": {
            "vimha": {
                "auth": {
                    "auth_url": f"{url}/identity",
                    "username": "admin",
                    "password": token,
                    "project_name": "admin",
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "region_name": "RegionOne",
                "identity_api_version": 3,
                "interface": "public",
            }
        }
    }


def write_clouds_yaml(data_dir: Path, url: str, token: str) -> Path:
    """`clouds.yaml` next to the admin token (0600: it holds the token)."""
    path = data_dir / "clouds.yaml"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(yaml.safe_dump(clouds_yaml(url, token), sort_keys=False))
    return path


async def run_cloud(config: Config, launcher: Launcher) -> int:
    """The controller and the nodes' agents (with their demo services), until a signal."""
    from vimha.controller import serve

    stop = asyncio.Event()
    launcher.start_bmcs()  # before the controller: a BMC that cannot start stops `vimha up`
    task = asyncio.create_task(launcher.run(stop))
    demo = asyncio.create_task(
        demo_vnfs.bootstrap(
            config.api.base_url,
            launcher.token,
            demo_vnfs.catalog(config.api.port, launcher.net is not None, launcher.qemu_image),
        )
    )
    try:
        return await serve(config, migrate=True)
    finally:
        demo.cancel()
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
    jobs = [asyncio.create_task(job(stop)) for job in launcher.background]
    try:
        await launcher.run(stop)
    finally:
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
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
    sdn: str = "centralised",
    libvirt: bool = False,
) -> int:
    """Start `vimha up` in the background, wait until it answers; returns its pid."""
    # With --ha the API answers once etcd, the database and a controller are up.
    timeout = timeout or (120.0 if ha or libvirt else 90.0 if netns else 60.0)
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
            *(["--libvirt"] if libvirt else []),
            "--sdn",
            sdn,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    pid_file(data_dir).write_text(f"{proc.pid}\n")
    url = f"http://127.0.0.1:{port}/vimfm/api_versions"
    deadline = time.monotonic() + timeout
    # one client for every poll: a client per poll costs its TLS context (~30 ms of CPU),
    # taken from the cloud it waits for
    with httpx.Client(timeout=1, verify=client_tls()) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                log_file = data_dir / "vimha.log"
                raise Permanent(f"vimha up exited with {proc.returncode}; see {log_file}")
            try:
                if http.get(url).status_code == 200:
                    return proc.pid
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
    raise Permanent(f"vimha up did not answer within {timeout:.0f}s; see {data_dir / 'vimha.log'}")


def down(data_dir: Path, timeout: float = 30.0) -> int | None:
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
