"""`vimha` commands of migration and maintenance (issue 19): migrate an instance, list the
migrations, start, show and abort maintenance sessions. Registered on the main app by
vimha.cli."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.table import Table

from vimha.cli import Json, Token, Url, app, client, emit, fail, out
from vimha.client import Client

maintenance_app = typer.Typer(
    no_args_is_help=True, help="Maintenance sessions: empty hosts one by one (Fenix-style)."
)
app.add_typer(maintenance_app, name="maintenance")


def _instance_app() -> typer.Typer:
    from vimha.cli_compute import instance_app

    return instance_app


@_instance_app().command("migrate")
def instance_migrate(
    instance: str,
    host: Annotated[str | None, typer.Option("--host", help="The destination")] = None,
    live: Annotated[bool, typer.Option("--live", help="Live only")] = False,
    cold: Annotated[bool, typer.Option("--cold", help="Cold only")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Migrate the instance by its policy (live where allowed and its bound can be met,
    else cold where allowed), within its VNF's disruption budget."""
    if live and cold:
        fail("--live or --cold, not both", 2)
    body: dict[str, Any] = {"host": host, "kind": "live" if live else "cold" if cold else None}
    rec = client(url, token).json("POST", f"/vim/v1/instances/{instance}/migrate", json=body)
    out.print(
        f"{rec['instanceName']}: {rec['kind']} migration {rec['id']} "
        f"{rec['source']} -> {rec['dest']} ({rec['reason']})"
    )


@app.command()
def migrations(
    instance: Annotated[str | None, typer.Option("--instance")] = None,
    active: Annotated[bool, typer.Option("--active", help="Only those under way")] = False,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Migrations, newest first: kind, hosts, state, the interruption measured."""
    params: dict[str, Any] = {}
    if instance:
        params["instanceId"] = instance
    if active:
        params["active"] = "true"
    data = client(url, token).json("GET", "/vim/v1/migrations", params=params)
    table = Table("id", "instance", "kind", "from", "to", "state", "interruption", "bound")
    for m in data:
        ms = m.get("interruptionMs")
        table.add_row(
            m["id"][:8],
            m["instanceName"],
            m["kind"],
            m["source"],
            m["dest"],
            m["state"],
            "" if ms is None else f"{ms:.0f} ms",
            "" if m.get("boundMs") is None else f"{m['boundMs']} ms",
        )
    emit(data, as_json, table)


@maintenance_app.command("start")
def maintenance_start(
    hosts: Annotated[list[str], typer.Argument(help="Hosts, in the order maintained")],
    at: Annotated[str | None, typer.Option("--at", help="Start time (ISO 8601)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show the plan")] = False,
    scale_in: Annotated[bool, typer.Option("--scale-in", help="A SCALE_IN step")] = False,
    answer_window: Annotated[
        float | None, typer.Option("--answer-window", help="Seconds VNFMs have to answer")
    ] = None,
    host_window: Annotated[
        float | None,
        typer.Option(
            "--host-window",
            help="Seconds each host stays in maintenance (default: until `maintenance done`)",
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow it until it ends")] = False,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Start a maintenance session (refused with the reasons before anything moves)."""
    body = {
        "hosts": hosts,
        "startAt": at,
        "dryRun": dry_run,
        "scaleIn": scale_in,
        "answerWindow": answer_window,
        "hostWindow": host_window,
    }
    api = client(url, token)
    data = api.json("POST", "/vim/v1/maintenance", json=body)
    if dry_run:
        _plan(data["plan"], as_json)
        return
    if as_json and not wait:
        emit(data, True)
        return
    out.print(f"maintenance session {data['id']}: {data['state']} ({', '.join(hosts)})")
    _plan(data["plan"], False)
    if wait:
        _follow(api, data["id"])


def _plan(plan: dict[str, Any], as_json: bool) -> None:
    table = Table("host", "instance", "policy", "default", "kind", "expected host", "why")
    for h in plan["hosts"]:
        for i in h["instances"] or [{}]:
            table.add_row(
                h["host"],
                i.get("name", "(empty)"),
                i.get("migrationPolicy", ""),
                i.get("defaultAction", ""),
                i.get("migrationKind") or "",
                i.get("expectedHost") or "",
                i.get("reason", ""),
            )
    for why in plan["refusals"]:
        table.add_row("REFUSED", "", "", "", "", "", why)
    emit(plan, as_json, table)


def _follow(api: Client, sid: str) -> None:
    said = ""
    while True:
        s = api.json("GET", f"/vim/v1/maintenance/{sid}")
        line = f"{s['state']} {s.get('currentHost') or ''} {s['waiting']}".strip()
        if line != said:
            out.print(line)
            said = line
        if s["state"] in ("MAINTENANCE_COMPLETE", "ABORTED", "FAILED"):
            out.print(s["reason"])
            return
        time.sleep(0.5)


def _session(api: Client, session: str | None) -> str:
    if session:
        return session
    active = api.json("GET", "/vim/v1/maintenance", params={"active": "true"})
    if len(active) != 1:
        fail(f"{len(active)} active sessions: name one", 2)
    return str(active[0]["id"])


@maintenance_app.command("show")
def maintenance_show(
    session: Annotated[str | None, typer.Argument(help="Default: every session")] = None,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Sessions (their state, hosts, what they wait for), or one in detail."""
    api = client(url, token)
    if session is None:
        data = api.json("GET", "/vim/v1/maintenance")
        table = Table("id", "state", "hosts", "current", "waiting / reason", "created")
        for s in data:
            hosts = " ".join(f"{h}:{p}" for h, p in s["hostStates"].items())
            table.add_row(
                s["id"],
                s["state"],
                hosts,
                s.get("currentHost") or "",
                s["waiting"] or s["reason"],
                s["createdAt"],
            )
        emit(data, as_json, table)
        return
    s = api.json("GET", f"/vim/v1/maintenance/{session}")
    if as_json:
        emit(s, True)
        return
    out.print(f"session {s['id']}: {s['state']} {s['waiting'] or s['reason']}")
    table = Table("at", "step")
    for step in s["history"]:
        table.add_row(step["at"], step["reason"])
    out.print(table)
    moves = Table("instance", "kind", "from", "to", "state", "interruption")
    for m in s["migrations"]:
        ms = m.get("interruptionMs")
        moves.add_row(
            m["instanceName"],
            m["kind"],
            m["source"],
            m["dest"],
            m["state"],
            "" if ms is None else f"{ms:.0f} ms",
        )
    out.print(moves)


@maintenance_app.command("abort")
def maintenance_abort(
    session: Annotated[str | None, typer.Argument(help="Default: the one active")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Stop the session where it is: what moved stays, hosts go back into service."""
    api = client(url, token)
    sid = _session(api, session)
    api.json("POST", f"/vim/v1/maintenance/{sid}/abort")
    out.print(f"maintenance session {sid}: abort asked")


@maintenance_app.command("done")
def maintenance_done(
    host: str,
    session: Annotated[str | None, typer.Argument(help="Default: the one active")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """The host's maintenance is finished: back into service once it answers."""
    api = client(url, token)
    sid = _session(api, session)
    api.json("POST", f"/vim/v1/maintenance/{sid}/hosts/{host}/done")
    out.print(f"maintenance session {sid}: {host} done")
