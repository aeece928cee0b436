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
) -> None:
    """Run the embedded cloud (one controller with SQLite in DATA_DIR, or with --ha three on
    PostgreSQL) in the foreground."""
    from vimha.cloud import embedded
    from vimha.controller import admin_token_from_file
    from vimha.logs import setup_logging

    if detach:
        pid = embedded.detach(data_dir, port, netns=netns, ha=ha, stateful=stateful)
        out.print(
            f"vimha is running in the background (pid {pid}); log: {data_dir}/vimha.log; "
            "stop it with `vimha down`"
        )
        return
    config = embedded.embedded_config(data_dir, port)
    setup_logging(config.log_level)
    token_path = Path(config.auth.token_file or "")
    token = admin_token_from_file(token_path)
    out.print(
        f"vimha embedded cloud: API http://127.0.0.1:{port}  data: {data_dir.resolve()}\n"
        f"admin token in {token_path} (or `vimha token`); e.g.\n"
        f'  curl -H "Authorization: Bearer $(vimha token)" http://127.0.0.1:{port}/vimfm/v1/alarms\n'
        "8 nodes (ctl-1..3, cmp-1..4, sto-1): `vimha hosts`; faults: `vimha chaos --help`.\n"
        "Ctrl-C stops it.",
        highlight=False,
    )
    cloud_config, launcher = embedded.prepare_cloud(
        data_dir, port, token, netns=netns, ha=ha, stateful=stateful
    )
    if stateful:
        out.print(
            "--stateful: MariaDB (group sql, primary and replicas), Galera (galera) and "
            "RabbitMQ (mq) on ctl-1..3, behind the balancers (`vimha groups`).",
            highlight=False,
        )
    if ha:
        out.print(
            "--ha: etcd, PostgreSQL (group `db`) and the controllers (group `vimha`) on "
            "ctl-1..3, behind the HAProxy pair; the API answers once a controller is up.",
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
def token(data_dir: DataDir = Path(".vimha")) -> None:
    """Print the embedded cloud's admin token."""
    path = data_dir / "admin-token"
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


# -- alarms -------------------------------------------------------------------------------
def _alarm_table(alarms: list[dict[str, Any]]) -> Table:
    table = Table("id", "severity", "object", "fault", "cause", "raised", "ack")
    for a in alarms:
        table.add_row(
            a.get("id", "")[:8],
            a.get("perceivedSeverity", ""),
            a.get("managedObjectId", ""),
            a.get("faultType", ""),
            a.get("probableCause", ""),
            a.get("alarmRaisedTime", ""),
            a.get("ackState", ""),
        )
    return table


@alarms_app.command("list")
def alarms_list(
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
    filter: Annotated[str | None, typer.Option("--filter", help="SOL 013 filter")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include cleared alarms")] = False,
) -> None:
    """List alarms (active ones unless --all or a filter on perceivedSeverity)."""
    params = {}
    if filter:
        params["filter"] = filter
    elif all_:
        params["filter"] = "(neq,perceivedSeverity,NONE)"
    alarms = client(url, token).paged("/vimfm/v1/alarms", params)
    emit(alarms, as_json, _alarm_table(alarms))


@alarms_app.command("show")
def alarms_show(alarm_id: str, url: Url = None, token: Token = None) -> None:
    """Show one alarm and its history."""
    c = client(url, token)
    alarm = c.json("GET", f"/vimfm/v1/alarms/{alarm_id}")
    alarm["history"] = c.json("GET", f"/vimfm/v1/alarms/{alarm_id}/history")
    emit(alarm, True)


@alarms_app.command("ack")
def alarms_ack(
    alarm_id: str,
    url: Url = None,
    token: Token = None,
    undo: Annotated[bool, typer.Option("--undo", help="Un-acknowledge")] = False,
) -> None:
    """Acknowledge an alarm (or un-acknowledge with --undo)."""
    state = "UNACKNOWLEDGED" if undo else "ACKNOWLEDGED"
    client(url, token).json(
        "PATCH",
        f"/vimfm/v1/alarms/{alarm_id}",
        content=json.dumps({"ackState": state}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    out.print(f"alarm {alarm_id} {state.lower()}")


# -- subscriptions ------------------------------------------------------------------------
@subs_app.command("list")
def subs_list(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    subs = client(url, token).paged("/vimfm/v1/subscriptions", {})
    table = Table("id", "callbackUri", "filter")
    for s in subs:
        table.add_row(s["id"], s["callbackUri"], json.dumps(s.get("filter", {})))
    emit(subs, as_json, table)


@subs_app.command("create")
def subs_create(
    callback: Annotated[str, typer.Option("--callback", help="Consumer's callback URI")],
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
    type_: Annotated[list[str] | None, typer.Option("--type", help="Notification type")] = None,
    severity: Annotated[list[str] | None, typer.Option("--severity")] = None,
    event_type: Annotated[list[str] | None, typer.Option("--event-type")] = None,
    obj: Annotated[list[str] | None, typer.Option("--object", help="Managed object id")] = None,
    location: Annotated[str | None, typer.Option("--location", help="e.g. site1/zone-a")] = None,
    basic_user: Annotated[str | None, typer.Option("--basic-user")] = None,
    basic_password: Annotated[str | None, typer.Option("--basic-password")] = None,
) -> None:
    """Subscribe a consumer (its callback must answer GET with 204)."""
    flt: dict[str, Any] = {}
    for key, value in (
        ("notificationTypes", type_),
        ("perceivedSeverities", severity),
        ("eventTypes", event_type),
        ("managedObjectIds", obj),
    ):
        if value:
            flt[key] = value
    if location:
        flt["locationPrefix"] = location
    body: dict[str, Any] = {"callbackUri": callback, "filter": flt}
    if basic_user:
        body["authentication"] = {
            "authType": ["BASIC"],
            "paramsBasic": {"userName": basic_user, "password": basic_password or ""},
        }
    response = client(url, token).call(
        "POST", "/vimfm/v1/subscriptions", json=body, follow_redirects=False
    )
    if response.status_code == 303:
        out.print(f"an identical subscription exists: {response.headers['location']}")
        return
    emit(response.json(), as_json, None) if as_json else out.print(
        f"subscription {response.json()['id']} created"
    )


@subs_app.command("delete")
def subs_delete(subscription_id: str, url: Url = None, token: Token = None) -> None:
    client(url, token).call("DELETE", f"/vimfm/v1/subscriptions/{subscription_id}")
    out.print(f"subscription {subscription_id} deleted")


# -- events -------------------------------------------------------------------------------
@events_app.command("send")
def events_send(
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
    file: Annotated[Path | None, typer.Option("--file", help="JSON file: event or list")] = None,
    obj: Annotated[str | None, typer.Option("--object", help="Managed object id")] = None,
    fault_type: Annotated[str | None, typer.Option("--fault-type")] = None,
    cause: Annotated[str | None, typer.Option("--cause", help="Probable cause")] = None,
    severity: Annotated[str, typer.Option("--severity")] = "MAJOR",
    event_type: Annotated[str, typer.Option("--event-type")] = "EQUIPMENT_ALARM",
    clear: Annotated[bool, typer.Option("--clear", help="Clear instead of raise")] = False,
) -> None:
    """Send a native fault event (or a file of them) to raise, update or clear alarms."""
    body: Any
    if file is not None:
        try:
            body = json.loads(file.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{file}: {exc}", 2)
    else:
        if not (obj and fault_type):
            fail("give --file, or at least --object and --fault-type", 2)
        body = {
            "managedObjectId": obj,
            "faultType": fault_type,
            "probableCause": cause or fault_type,
            "perceivedSeverity": "CLEARED" if clear else severity.upper(),
            "eventType": event_type.upper(),
        }
    result = client(url, token).json("POST", "/vim/v1/events", json=body)
    if as_json:
        emit(result, True)
    else:
        for change in result["changes"]:
            out.print(f"{change['change']:<9} {change['alarmId']}  {change['reason']}")
        if not result["changes"]:
            out.print(f"{result['accepted']} event(s) accepted; no alarm changed")


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


@app.command()
def hosts(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Hosts with their health, failure kind, planes and reason."""
    data = client(url, token).json("GET", "/vim/v1/hosts")
    table = Table("host", "health", "failure", "planes", "location", "reason")
    for h in data:
        planes = " ".join(f"{p}:{v['status']}" for p, v in h.get("planes", {}).items())
        table.add_row(
            h["id"],
            h["healthStatus"],
            h.get("failureKind") or "",
            planes,
            h.get("location", {}).get("path", ""),
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
