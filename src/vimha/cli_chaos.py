"""`vimha chaos`: real faults in the embedded cloud (registered on the main app by vimha.cli;
the faults themselves are in vimha.cloud.chaos)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vimha.cli import DataDir, chaos_app, out


@chaos_app.command("kill-active")
def chaos_kill_active(
    group: str,
    how: str = typer.Option(
        "kill", "--how", help="kill (SIGKILL), stop (SIGSTOP), agent-stop, power-off"
    ),
    member: str | None = typer.Option(
        None, "--member", help="This active member (a node) rather than the first"
    ),
    data_dir: DataDir = Path(".vimha"),
) -> None:
    """Fail the active member of a service group (api, kv, workers; with --stateful sql,
    galera, mq): a standby takes over, or the cluster goes on without it."""
    from vimha.cloud import chaos

    out.print(chaos.kill_active(data_dir, group, how, member))


@chaos_app.command("kill-agent")
def chaos_kill_agent(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """SIGKILL a node's agent: the node fails and is fenced (`heal NODE` powers it on)."""
    from vimha.cloud import chaos

    out.print(chaos.kill_agent(data_dir, node))


@chaos_app.command("kill-service")
def chaos_kill_service(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """SIGKILL a node's demo service (its agent's watchdog restarts it)."""
    from vimha.cloud import chaos

    out.print(chaos.kill_service(data_dir, node))


@chaos_app.command("hang-service")
def chaos_hang_service(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """SIGSTOP a node's demo service (a hung service: the watchdog restarts it)."""
    from vimha.cloud import chaos

    out.print(chaos.hang_service(data_dir, node))


@chaos_app.command("plane-down")
def chaos_plane_down(node: str, plane: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Take one network plane of a node down (loopback mode: the agent drops its heartbeats)."""
    from vimha.cloud import chaos

    out.print(chaos.plane_down(data_dir, node, plane))


@chaos_app.command("power-off")
def chaos_power_off(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Power a node off through its BMC (Redfish ForceOff): its processes stop."""
    from vimha.cloud import chaos

    out.print(chaos.power_off(data_dir, node))


@chaos_app.command("power-on")
def chaos_power_on(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Power a node on through its BMC: its agent and services start."""
    from vimha.cloud import chaos

    out.print(chaos.power_on(data_dir, node))


@chaos_app.command("power-cut")
def chaos_power_cut(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Cut a node's power with no Redfish request (a pulled plug; also while its BMC is
    silent): its processes stop; `heal` powers it on."""
    from vimha.cloud import chaos

    out.print(chaos.power_cut(data_dir, node))


@chaos_app.command("psu-fail")
def chaos_psu_fail(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Fail a node's power supply (its BMC reports PSU1 Critical)."""
    from vimha.cloud import chaos

    out.print(chaos.psu_fail(data_dir, node))


@chaos_app.command("overheat")
def chaos_overheat(node: str, data_dir: DataDir = Path(".vimha")) -> None:
    """Overheat a node's CPU (its BMC reports 95 C, Critical)."""
    from vimha.cloud import chaos

    out.print(chaos.overheat(data_dir, node))


@chaos_app.command("partition")
def chaos_partition(
    rack: str,
    with_bmc: Annotated[
        bool, typer.Option("--with-bmc", help="Silence the rack's BMCs too (ToR carries them)")
    ] = False,
    data_dir: DataDir = Path(".vimha"),
) -> None:
    """Cut a rack's nodes off the controllers (nftables in netns mode; `heal` ends it)."""
    from vimha.cloud import chaos

    out.print(chaos.partition(data_dir, rack, with_bmc))


@chaos_app.command("heal")
def chaos_heal(node: str | None = typer.Argument(None), data_dir: DataDir = Path(".vimha")) -> None:
    """Undo every fault on one node or all: planes up, processes continued, sensors
    normal, powered on."""
    from vimha.cloud import chaos

    out.print(chaos.heal(data_dir, node))


@chaos_app.command("instance-crash")
def chaos_instance_crash(instance: str, data_dir: DataDir = Path(".vimha")) -> None:
    """The instance's guest crashes (its process dies by SIGSEGV; a QEMU guest panics)."""
    from vimha.cloud import chaos

    out.print(chaos.instance_chaos(data_dir, instance, "crash"))


@chaos_app.command("instance-hang")
def chaos_instance_hang(instance: str, data_dir: DataDir = Path(".vimha")) -> None:
    """The instance's guest hangs: it stops answering and stops petting its watchdog."""
    from vimha.cloud import chaos

    out.print(chaos.instance_chaos(data_dir, instance, "hang"))


@chaos_app.command("instance-stop-watchdog")
def chaos_instance_stop_watchdog(instance: str, data_dir: DataDir = Path(".vimha")) -> None:
    """The instance's guest keeps answering but stops petting its watchdog."""
    from vimha.cloud import chaos

    out.print(chaos.instance_chaos(data_dir, instance, "stop-watchdog"))
