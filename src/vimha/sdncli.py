"""`vimha sdn ...` and the SDN faults of `vimha chaos` (issue 18): commands of their own
module, registered by cli.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from vimha.cli import DataDir, Json, Token, Url, chaos_app, client, emit, out

sdn_app: typer.Typer = typer.Typer(
    no_args_is_help=True, help="The SDN controller: switches, intents."
)


@sdn_app.command("run")
def sdn_run(
    config: Annotated[Path, typer.Option("--config", help="SDN instance YAML config file")],
) -> None:
    """Run one SDN controller instance (os-ken, OpenFlow 1.3): normally started by the agent's
    `sdn` handler for its member of the SDN service group."""
    from vimha.logs import setup_logging
    from vimha.sdn.config import load_sdn_config
    from vimha.sdn.main import run_sdn

    cfg = load_sdn_config(config)
    setup_logging(cfg.log_level)
    raise typer.Exit(asyncio.run(run_sdn(cfg)))


@sdn_app.command("status")
def sdn_status(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Switches with their host, master, epoch, connected instances, ports and flows."""
    data = client(url, token).json("GET", "/vim/v1/sdn/switches")
    table = Table("switch", "host", "master", "epoch", "connected", "flows", "down", "alarms")
    for s in data:
        down = [*s.get("portsDown", []), *s.get("tunnelsDown", [])]
        table.add_row(
            s["dpid"],
            s.get("host") or "",
            s.get("master") or "-",
            "" if s.get("epoch") is None else str(s["epoch"]),
            " ".join(s.get("connected", [])),
            "" if s.get("flows") is None else str(s["flows"]),
            " ".join(down),
            " ".join(s.get("alarms", [])),
        )
    emit(data, as_json, table)


@sdn_app.command("networks")
def sdn_networks(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """The network intents and their ports."""
    api = client(url, token)
    nets = api.json("GET", "/vim/v1/sdn/networks")
    ports = api.json("GET", "/vim/v1/sdn/ports")
    table = Table("network", "vni", "port", "host", "mac", "ip", "device")
    for n in nets:
        mine = [p for p in ports if p["networkId"] == n["id"]]
        table.add_row(n["name"], str(n["vni"]), "", "", "", "", "")
        for p in mine:
            table.add_row("", "", p["id"], p["host"], p["mac"], p["ip"], p["device"])
    emit({"networks": nets, "ports": ports}, as_json, table)


@chaos_app.command("sdn-partition")
def chaos_sdn_partition(
    member: str | None = typer.Option(None, "--member", help="This instance (a node)"),
    data_dir: DataDir = Path(".vimha"),
) -> None:
    """Cut the SDN master (or --member) off from its switches (netns mode; `heal` ends it)."""
    from vimha.cloud import chaos

    out.print(chaos.sdn_partition(data_dir, member))


@chaos_app.command("sdn-stale")
def chaos_sdn_stale(
    member: str | None = typer.Option(None, "--member", help="This instance (a node)"),
    data_dir: DataDir = Path(".vimha"),
    as_json: Json = False,
) -> None:
    """A former SDN master (a standby, or --member) asks its switches for MASTER with its old
    epoch: each switch refuses it (OFPRRFC_STALE)."""
    from vimha.cloud import chaos

    answers = chaos.sdn_stale(data_dir, member)
    table = Table("instance", "switch", "generation", "switch answered")
    for a in answers:
        table.add_row(a["instance"], a["dpid"], str(a["generation"]), a["answer"])
    emit(answers, as_json, table)
