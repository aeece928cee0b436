"""The `vimha` command. Errors end with a sentence on stderr and a non-zero exit code,
never a traceback: 1 for a failed operation, 2 for bad usage or input."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vimha.client import Client, ClientError, resolve
from vimha.domain.errors import InvalidInput, VimhaError

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="vimha: high availability for the VIM of an NFV cloud.",
)
alarms_app = typer.Typer(no_args_is_help=True, help="Alarms (SOL 003 fault management).")
subs_app = typer.Typer(no_args_is_help=True, help="Subscriptions to notifications.")
events_app = typer.Typer(no_args_is_help=True, help="Send fault events.")
db_app = typer.Typer(no_args_is_help=True, help="The controller's database.")
chaos_app = typer.Typer(no_args_is_help=True, help="Inject real faults into the embedded cloud.")
app.add_typer(alarms_app, name="alarms")
app.add_typer(subs_app, name="subscriptions")
app.add_typer(events_app, name="events")
app.add_typer(db_app, name="db")
app.add_typer(chaos_app, name="chaos")

# Piped output (scripts, tests) gets wide tables instead of 80-column wrapping.
out = Console(width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True)  # an error stays on one line for grep

Url = Annotated[str | None, typer.Option("--url", help="API URL (else $VIMHA_URL, else local)")]
Token = Annotated[str | None, typer.Option("--token", help="API token (else $VIMHA_TOKEN)")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
DataDir = Annotated[Path, typer.Option("--data-dir", help="Embedded cloud's data folder")]


def say_error(message: object) -> None:
    err.print(Text.assemble(("error:", "red"), " ", str(message)), highlight=False)


def fail(message: str, code: int = 1) -> None:
    say_error(message)
    raise typer.Exit(code)


def client(url: str | None, token: str | None) -> Client:
    return Client(*resolve(url, token))


def emit(data: Any, as_json: bool, table: Table | None = None) -> None:
    if as_json or table is None:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        out.print(table)


# -- processes ----------------------------------------------------------------------------
@app.command()
def up(
    data_dir: DataDir = Path(".vimha"),
    port: Annotated[int, typer.Option(help="API port")] = 8470,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background")] = False,
    netns: Annotated[
        bool,
        typer.Option("--netns", help="Nodes in network namespaces with real links (root)"),
    ] = False,
    ha: Annotated[
        bool,
        typer.Option(
            "--ha",
            help="No single point of failure: 3 etcd members, 3 controllers on PostgreSQL "
            "(an active-standby group), an HAProxy pair (needs etcd-server, postgresql, haproxy)",
        ),
    ] = False,
    stateful: Annotated[
        bool,
        typer.Option(
            "--stateful",
            help="The VIM's stateful services too, on ctl-1..3 behind the balancers: a MariaDB "
            "pair (group sql), a Galera cluster (galera), a RabbitMQ cluster (mq) (needs "
            "mariadb-server, galera-4, rsync, rabbitmq-server)",
        ),
    ] = False,
    sdn: Annotated[
        str,
        typer.Option(
            "--sdn",
            help="With --netns: the SDN controller's model, centralised (a pair, ctl-1/ctl-2), "
            "distributed (ctl-1..3, mastership per switch) or off; the compute nodes run Open "
            "vSwitch (needs openvswitch-switch)",
        ),
    ] = "centralised",
    libvirt: Annotated[
        bool,
        typer.Option(
            "--libvirt",
            help="The compute nodes' instances as QEMU guests through libvirtd (root; needs "
            "libvirt-daemon-system and qemu-system-x86; slow to boot under software emulation: "
            "about a minute for the demo VNFs)",
        ),
    ] = False,
) -> None:
    """Run the embedded cloud (one controller with SQLite in DATA_DIR, or with --ha three on
    PostgreSQL) in the foreground."""
    from vimha.admin_token import admin_token_from_file
    from vimha.cloud import embedded
    from vimha.logs import setup_logging

    openstack = (
        f"OpenStack APIs (Identity, Compute, Image, Network) with {data_dir.resolve()}/"
        "clouds.yaml; e.g.\n"
        f"  export OS_CLIENT_CONFIG_FILE={data_dir.resolve()}/clouds.yaml\n"
        "  openstack --os-cloud vimha server list"
    )
    if detach:
        pid = embedded.detach(
            data_dir, port, netns=netns, ha=ha, stateful=stateful, sdn=sdn, libvirt=libvirt
        )
        out.print(
            f"vimha is running in the background (pid {pid}); log: {data_dir}/vimha.log; "
            f"stop it with `vimha down`\ndashboard: http://127.0.0.1:{port}/ui (log in with "
            f"`vimha token --role operator`)\n{openstack}",
            highlight=False,
        )
        return
    config = embedded.embedded_config(data_dir, port)
    setup_logging(config.log_level)
    token_path = Path(config.auth.token_file or "")
    admin_token_from_file(token_path)  # made now, the controller and `vimha chaos` read it
    out.print(
        f"vimha embedded cloud: API http://127.0.0.1:{port}  data: {data_dir.resolve()}\n"
        f"admin token in {token_path} (or `vimha token`); e.g.\n"
        f'  curl -H "Authorization: Bearer $(vimha token)" http://127.0.0.1:{port}/vimfm/v1/alarms\n'
        "8 nodes (ctl-1..3, cmp-1..4, sto-1): `vimha hosts`; faults: `vimha chaos --help`.\n"
        f"dashboard: http://127.0.0.1:{port}/ui (log in with `vimha token --role operator`)\n"
        f"{openstack}\n"
        "Ctrl-C stops it.",
        highlight=False,
    )
    cloud_config, launcher = embedded.prepare_cloud(
        data_dir, port, netns=netns, ha=ha, stateful=stateful, sdn=sdn, libvirt=libvirt
    )
    if libvirt:
        out.print(
            "--libvirt: the instances of cmp-1..4 are QEMU guests (libvirt:///system), on the "
            "bridges of vnf-a and vnf-b (10.96.0.0/16, 10.97.0.0/16); they boot in about a "
            "minute under software emulation (`vimha instances`).",
            highlight=False,
        )
    if netns:
        out.print(
            "--netns: each instance of cmp-1..4 runs in a network namespace of its own, its "
            "ports veths on its node's bridge for vnf-a (10.64.0.0/16) or vnf-b (10.65.0.0/16).",
            highlight=False,
        )
    if netns and sdn != "off":
        from vimha.cloud import sdn as cloud_sdn

        missing_ovs = cloud_sdn.available()
        out.print(
            f"SDN: off ({missing_ovs})" if missing_ovs else
            f"SDN: the {sdn} model; Open vSwitch on cmp-1..4, stand-in VNF endpoints "
            "vh<port>-a1..a4, -b1, -b3 (`vimha sdn status`)",
            highlight=False,
        )  # fmt: skip
    if stateful:
        out.print(
            "--stateful: MariaDB (group sql, primary and replicas), Galera (galera) and "
            "RabbitMQ (mq) on ctl-1..3, behind the balancers (`vimha groups`).",
            highlight=False,
        )
    if ha:
        out.print(
            "--ha: etcd, PostgreSQL (group `db`) and the controllers (group `vimha`) on "
            "ctl-1..3, behind the HAProxy pair; the API answers once a controller is up. "
            "etcd's authentication is on: each agent and controller has a user of its own "
            f"(passwords in {data_dir.resolve() / 'etcd-auth'}).",
            highlight=False,
        )
        raise typer.Exit(asyncio.run(embedded.run_ha_cloud(launcher)))
    raise typer.Exit(asyncio.run(embedded.run_cloud(cloud_config, launcher)))


@app.command()
def down(data_dir: DataDir = Path(".vimha")) -> None:
    """Stop an embedded cloud started with `vimha up --detach`."""
    from vimha.cloud import embedded

    pid = embedded.down(data_dir)
    out.print("vimha was not running" if pid is None else f"stopped vimha (pid {pid})")


@app.command()
def controller(
    config: Annotated[Path, typer.Option("--config", help="YAML config file")],
    migrate: Annotated[
        bool, typer.Option("--migrate", help="Migrate the schema first (one controller at a time)")
    ] = False,
    wait_store: Annotated[
        float, typer.Option("--wait-store", help="Retry an unreachable store this long (s)")
    ] = 0.0,
) -> None:
    """Run a controller: API and engine loops. The schema must be migrated (`vimha db upgrade`
    or --migrate)."""
    from vimha.config import load
    from vimha.controller import serve
    from vimha.logs import setup_logging

    cfg = load(config)
    setup_logging(cfg.log_level)
    raise typer.Exit(asyncio.run(serve(cfg, migrate=migrate, wait_store=wait_store)))


@app.command()
def agent(
    config: Annotated[Path, typer.Option("--config", help="Agent YAML config file")],
) -> None:
    """Run a node agent: signed heartbeats on every network plane."""
    from vimha.agent.main import load_agent_config, run_agent
    from vimha.logs import setup_logging

    cfg = load_agent_config(config)
    setup_logging(cfg.log_level)
    raise typer.Exit(asyncio.run(run_agent(cfg)))


@app.command()
def token(
    data_dir: DataDir = Path(".vimha"),
    role: Annotated[str, typer.Option(help="admin, operator or reader")] = "admin",
) -> None:
    """Print the embedded cloud's admin token (or its operator's or reader's)."""
    if role not in ("admin", "operator", "reader"):
        fail(f"no role {role}: admin, operator or reader")
    path = data_dir / f"{role}-token"
    try:
        sys.stdout.write(path.read_text().strip() + "\n")
    except OSError:
        fail(f"no token at {path}: start the embedded cloud with `vimha up` first")


@db_app.command("upgrade")
def db_upgrade(
    config: Annotated[Path | None, typer.Option("--config", help="YAML config file")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Store URL (overrides config)")] = None,
) -> None:
    """Create or migrate the schema to this version's head."""
    from vimha.config import load
    from vimha.drivers.sqlstore import SqlStore

    overrides: dict[str, Any] = {"auth": {"token_file": "unused"}}
    if url:
        overrides["store"] = {"url": url}
    cfg = load(config, overrides)
    if cfg.store.url.startswith("sqlite:///"):
        Path(cfg.store.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    store = SqlStore(cfg.store.url)
    try:
        before, after = store.upgrade()
    finally:
        store.close()
    out.print(f"schema {before or '(empty)'} -> {after}")


@app.command("check-config")
def check_config(
    config: Annotated[Path | None, typer.Option("--config", help="Controller config")] = None,
    agent: Annotated[
        list[Path] | None, typer.Option("--agent", help="An agent config (repeat)")
    ] = None,
    budget: float = typer.Option(1.0, "--budget", help="Switch-over budget (s)"),
    client_timeout: float = typer.Option(5.0, "--client-timeout", help="Clients' timeout (s)"),
    election_timeout: float = typer.Option(
        1.0, "--etcd-election-timeout", help="etcd's --election-timeout (s)"
    ),
) -> None:
    """Check timing invariants across the stack: heartbeats, leases, etcd, HAProxy, clients."""
    from vimha.checkconfig import check_files
    from vimha.domain.timing import Level

    findings = check_files(config, list(agent or []), budget, client_timeout, election_timeout)
    for f in findings:
        out.print(Text(f"{f.level.value:<7} {f.where}: {f.message}"), soft_wrap=True)
    errors = sum(f.level is Level.ERROR for f in findings)
    if errors:
        fail(f"{errors} timing invariant(s) violated", 1)
    out.print(f"timing invariants hold ({len(findings)} warning(s))")


hosts_app = typer.Typer(
    help="Hosts: health, planes, instances; confirm-down, report-fault.",
    invoke_without_command=True,
)
app.add_typer(hosts_app, name="hosts")


@hosts_app.command("confirm-down")
def hosts_confirm_down(host: str, url: Url = None, token: Token = None) -> None:
    """The operator's word that a failed host, which could not be fenced, is off: its
    instances (UNKNOWN until now) are recovered."""
    done = client(url, token).json("POST", f"/vim/v1/hosts/{host}/confirm-down")
    out.print(
        f"{host} confirmed off by {done['confirmedBy']}; recovering "
        f"{len(done['recovering'])} instance(s)"
    )


@hosts_app.command("report-fault")
def hosts_report_fault(
    host: str,
    reason: str = typer.Option(..., "--reason", help="What the VNF or VNFM saw"),
    alarm_only: bool = typer.Option(False, "--alarm-only", help="Alarm, do not fence"),
    url: Url = None,
    token: Token = None,
) -> None:
    """Report a host as faulty (as a VNFM would): alarmed, and fenced unless --alarm-only."""
    body = {"reason": reason, "action": "alarm" if alarm_only else "fence"}
    done = client(url, token).json("POST", f"/vim/v1/hosts/{host}/report-fault", json=body)
    out.print(
        f"{host}: {done['alarm']} raised; fencing {'started' if done['fencing'] else 'not started'}"
    )


@hosts_app.callback()
def hosts(ctx: typer.Context, url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Hosts with their health, failure kind, planes, instances and reason."""
    if ctx.invoked_subcommand is not None:
        return
    data = client(url, token).json("GET", "/vim/v1/hosts")
    table = Table("host", "health", "failure", "planes", "location", "instances", "reason")
    for h in data:
        planes = " ".join(f"{p}:{v['status']}" for p, v in h.get("planes", {}).items())
        compute = h.get("compute") or {}
        placed = " ".join(f"{i['name']}:{i['status']}" for i in compute.get("instances", []))
        table.add_row(
            h["id"],
            h["healthStatus"],
            h.get("failureKind") or "",
            planes,
            h.get("location", {}).get("path", ""),
            placed if compute else "",
            h.get("reason", ""),
        )
    emit(data, as_json, table)


@app.command()
def services(
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
    host: str | None = typer.Option(None, "--host", help="Only this host's services"),
) -> None:
    """Services of the hosts as their agents see them: status, last check, restarts."""
    params = f"?hostId={host}" if host else ""
    data = client(url, token).json("GET", f"/vim/v1/services{params}")
    table = Table(
        "host", "service", "kind", "status", "last check", "restarts", "total", "declared in"
    )
    for s in data:
        check = "" if "lastCheckOk" not in s else "ok" if s["lastCheckOk"] else "failed"
        table.add_row(
            s["hostId"],
            s["name"],
            s["kind"],
            s["status"],
            check if check != "failed" else s.get("lastCheckDetail", check),
            str(s.get("restarts", "")),
            str(s.get("totalRestarts", "")),
            s.get("source", ""),
        )
    emit(data, as_json, table)


@app.command()
def groups(
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Service groups: policy, health, members with their roles and epochs, last switch-over."""
    data = client(url, token).json("GET", "/vim/v1/service-groups")
    table = Table("group", "policy", "health", "member", "role", "healthy", "epoch", "detail")
    for g in data:
        for i, m in enumerate(g["members"]):
            table.add_row(
                g["name"] if i == 0 else "",
                g["policy"] if i == 0 else "",
                g["health"] if i == 0 else "",
                m["member"],
                str(m.get("role")),
                "yes" if m.get("healthy") else "no",
                "" if m.get("epoch") is None else str(m["epoch"]),
                str(m.get("detail") or ""),
            )
        last = g.get("lastSwitchover")
        if last:
            took = last.get("switchoverSeconds")
            table.add_row(
                "", "", "", "last switch-over:",
                f"{last['from']} -> {last['to']}",
                "", str(last.get("epoch", "")),
                f"{took:.3f}s: {last['reason']}" if took is not None else str(last["reason"]),
            )  # fmt: skip
    emit(data, as_json, table)


@app.command()
def status(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """The cloud at a glance: hosts by health, active alarms by severity, the controller."""
    api = client(url, token)
    controller = api.json("GET", "/vim/v1/status")
    hosts_seen = api.json("GET", "/vim/v1/hosts")
    alarms_seen = api.json("GET", "/vimfm/v1/alarms")
    health: dict[str, list[str]] = {}
    for h in hosts_seen:
        health.setdefault(h["healthStatus"], []).append(h["id"])
    severity: dict[str, int] = {}
    for a in alarms_seen:
        severity[a["perceivedSeverity"]] = severity.get(a["perceivedSeverity"], 0) + 1
    data = {"controller": controller, "hosts": health, "activeAlarms": severity}
    if as_json:
        emit(data, True)
        return
    table = Table("what", "state")
    for state, names in sorted(health.items()):
        table.add_row(f"hosts {state}", f"{len(names)}: {' '.join(sorted(names))}")
    for sev in ("CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"):
        if severity.get(sev):
            table.add_row(f"alarms {sev}", str(severity[sev]))
    if not severity:
        table.add_row("alarms", "none active")
    for key, value in controller.items():
        if not isinstance(value, dict | list):
            table.add_row(f"controller {key}", str(value))
    emit(data, False, table)


# registers the commands of alarms, subscriptions, events, chaos, compute, etcd access,
# insight, migration and maintenance
from vimha import (  # noqa: E402, F401
    cli_chaos,
    cli_compute,
    cli_etcd,
    cli_faults,
    cli_insight,
    cli_maintenance,
)


def main() -> None:
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except ClientError as exc:
        say_error(exc)
        sys.exit(1)
    except InvalidInput as exc:
        say_error(exc.detail)
        sys.exit(2)
    except VimhaError as exc:
        say_error(exc.detail)
        sys.exit(1)
    except Exception as exc:  # click usage errors (typer may vendor click) and the unexpected
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        say_error(f"{type(exc).__name__}: {exc}")
        sys.exit(1)


from vimha import sdncli  # noqa: E402  (its commands use the helpers above)

app.add_typer(sdncli.sdn_app, name="sdn")
