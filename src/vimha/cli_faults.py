"""`vimha alarms`, `vimha subscriptions`, `vimha events`: the fault management API from the
command line (registered on the main app by vimha.cli)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vimha.cli import Json, Token, Url, alarms_app, client, emit, events_app, fail, out, subs_app


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
