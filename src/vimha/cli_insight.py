"""`vimha` commands of insight (issue 20): HA metrics, incidents with their timeline drawn in
the terminal, the correlation rules. Registered on the main app by vimha.cli."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group
from rich.table import Table
from rich.text import Text

from vimha.cli import Json, Token, Url, app, client, emit, out

incident_app = typer.Typer(no_args_is_help=True, help="One incident: its timeline and budgets.")
correlation_app = typer.Typer(no_args_is_help=True, help="Correlation rules (root cause).")
app.add_typer(incident_app, name="incident")
app.add_typer(correlation_app, name="correlation")

BAR = 24
Window = Annotated[str, typer.Option("--window", "-w", help="1h, 1d or 30d")]


# -- figures --------------------------------------------------------------------------------
def percent(a: float | None) -> str:
    if a is None:
        return "-"
    return f"{100 * a:.5f} %" if a < 1 else "100 %"


def nines(n: float | None, a: float | None) -> str:
    if a is None:
        return "-"
    return "∞" if n is None else f"{n:.2f}"


def seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 120:
        return f"{s:.3f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def figures_row(f: dict[str, Any]) -> list[str]:
    return [
        percent(f["availability"]),
        nines(f["nines"], f["availability"]),
        seconds(f["outageSeconds"]),
        str(f["failures"]),
        seconds(f["mtbfSeconds"]),
        seconds(f["mttrSeconds"]),
    ]


FIGURES = ("availability", "nines", "outage", "failures", "MTBF", "MTTR")


def summary_view(data: dict[str, Any]) -> Group:
    """The whole cloud over one window: SALs, VNFs, hosts, incident stages."""
    sals = Table("SAL", "of", *FIGURES, title=f"service availability levels, {data['window']}")
    for s in data["sals"]:
        sals.add_row(s["sal"], f"{s['vnfs']} VNF service(s)", *figures_row(s["service"]))
        sals.add_row("", f"{s['instanceCount']} instance(s)", *figures_row(s["instances"]))
    vnfs = Table("VNF", "SAL", *FIGURES, title="VNFs (service: out while a VDU has none up)")
    for v in data["vnfs"]:
        vnfs.add_row(v["name"], v["sal"] or "-", *figures_row(v["service"]))
    hosts = Table("host", *FIGURES, "instance failures", title="hosts")
    for h in data["hosts"]:
        hosts.add_row(h["host"], *figures_row(h), str(h["instanceFailures"]))
    return Group(sals, vnfs, hosts, stages_view(data["incidents"]))


def stages_view(data: dict[str, Any]) -> Table:
    table = Table(
        "stage",
        "count",
        "mean",
        "p50",
        "p99",
        "max",
        "target",
        "over",
        title=f"incident stages, {data['window']}: {data['opened']} opened, {data['open']} open",
    )
    for name, s in data["stages"].items():
        table.add_row(
            name,
            str(s["count"]),
            seconds(s["meanSeconds"]),
            seconds(s["p50Seconds"]),
            seconds(s["p99Seconds"]),
            seconds(s["maxSeconds"]),
            seconds(s["targetSeconds"]),
            str(s["overTarget"]),
        )
    return table


def subject_view(data: dict[str, Any], what: str) -> Group:
    """One instance, VNF or host: its figures per window, its outages."""
    parts: list[Any] = []
    windows = data.get("windows") or data.get("service", {}).get("windows", {})
    table = Table("window", *FIGURES, title=what)
    for name, f in windows.items():
        table.add_row(name, *figures_row(f))
    parts.append(table)
    if "instances" in data and isinstance(data["instances"], dict):
        inst = Table("window", *FIGURES, title="its instances together")
        for name, f in data["instances"]["windows"].items():
            inst.add_row(name, *figures_row(f))
        parts.append(inst)
    outages = data.get("outages") or data.get("service", {}).get("outages", [])
    if outages:
        table = Table("start", "duration", "source", "cause", title="outages (30 days)")
        for o in outages:
            end = seconds(o["durationSeconds"]) + ("" if o["end"] else " (ongoing)")
            table.add_row(o["start"], end, o["source"], o["cause"])
        parts.append(table)
    return Group(*parts)


@app.command("metrics")
def metrics_cmd(
    window: Window = "1d",
    instance: Annotated[str | None, typer.Option(help="One instance (id)")] = None,
    vnf: Annotated[str | None, typer.Option(help="One VNF (id or name)")] = None,
    host: Annotated[str | None, typer.Option(help="One host")] = None,
    sal: Annotated[str | None, typer.Option(help="One SAL: LEVEL_1, LEVEL_2, LEVEL_3")] = None,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """HA metrics (VNF-4): availability (and nines), outage time, failures, MTBF, MTTR."""
    c = client(url, token)
    if instance:
        data = c.json("GET", f"/vim/v1/metrics/instances/{instance}")
        view: Any = subject_view(data, f"instance {data['name']} ({data['status']})")
    elif vnf:
        data = c.json("GET", f"/vim/v1/metrics/vnfs/{vnf}")
        view = subject_view(data, f"VNF {data['name']} ({data['sal']}): its service")
    elif host:
        data = c.json("GET", f"/vim/v1/metrics/hosts/{host}")
        view = subject_view(data, f"host {host}")
    elif sal:
        data = c.json("GET", f"/vim/v1/metrics/sals/{sal}")
        view = subject_view(
            {"windows": data["service"]["windows"], "instances": data["instanceLevel"]},
            f"{sal}: {data['vnfs']} VNF service(s), {data['instances']} instance(s)",
        )
    else:
        data = c.json("GET", "/vim/v1/metrics", params={"window": window})
        view = summary_view(data)
    if as_json:
        emit(data, True)
    else:
        out.print(view)


# -- incidents ------------------------------------------------------------------------------
def incidents_table(items: list[dict[str, Any]]) -> Table:
    table = Table("id", "kind", "state", "opened", "title", "instances", "total", "over budget")
    for i in items:
        total: dict[str, Any] = next((b for b in i["budgets"] if b["stage"] == "total"), {})
        over = [b["stage"] for b in i["budgets"] if b["over"]]
        table.add_row(
            i["id"][:8],
            i["kind"],
            i["state"],
            i["openedAt"],
            i["title"],
            str(len(i["affectedInstances"])),
            seconds(total.get("seconds")),
            ", ".join(over) or "-",
        )
    return table


@app.command("incidents")
def incidents_cmd(
    state: Annotated[str | None, typer.Option(help="OPEN, RECOVERED, CLOSED or MERGED")] = None,
    kind: Annotated[str | None, typer.Option(help="HOST, INSTANCE or ELEMENT")] = None,
    limit: Annotated[int, typer.Option(help="At most this many")] = 50,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Incidents, newest first: a failure and every action it caused."""
    params: dict[str, Any] = {"limit": limit}
    if state:
        params["state"] = state
    if kind:
        params["kind"] = kind
    data = client(url, token).json("GET", "/vim/v1/incidents", params=params)
    emit(data, as_json, incidents_table(data))


STAGE_STYLE = {
    "failed": "red",
    "detected": "yellow",
    "fenced": "magenta",
    "placed": "cyan",
    "booted": "blue",
    "serving": "green",
    "alarm": "dim",
    "note": "dim",
}


def timeline_view(inc: dict[str, Any], width: int = BAR) -> Group:
    """The incident drawn: each step at its time on a bar, then each stage's budget."""
    head = Text.assemble(
        (f"incident {inc['id']}", "bold"),
        f"  {inc['kind']}  ",
        (inc["title"], "bold"),
        "  ",
        (inc["state"], "green" if inc["state"] in ("RECOVERED", "CLOSED") else "yellow"),
    )
    names = {a["instanceId"]: a.get("name") or a["instanceId"] for a in inc["affectedInstances"]}
    steps = inc["timeline"]
    span = max((e["offsetSeconds"] for e in steps), default=0.0) or 1.0
    table = Table("t", "", "stage", "object", "detail", box=None, pad_edge=False)
    for e in steps:
        pos = round(e["offsetSeconds"] / span * (width - 1))
        style = STAGE_STYLE.get(e["stage"], "")
        bar = Text("·" * pos, "dim") + Text("●", style) + Text(" " * (width - 1 - pos))
        obj = names.get(e["object"], e["object"])
        source = "" if e["source"] == "observed" else f" ({e['source']})"
        table.add_row(
            f"+{e['offsetSeconds']:.3f} s",
            bar,
            Text(e["stage"], style),
            obj[:24],
            e["detail"] + source,
        )
    budgets = Table("stage", "used", "target", "", box=None, pad_edge=False, title="budgets")
    for b in inc["budgets"]:
        if b["seconds"] is None:
            budgets.add_row(b["stage"], "-", seconds(b["targetSeconds"]), "")
            continue
        used = b["usedPercent"]
        if used is None:  # no target: nothing to measure it against
            budgets.add_row(b["stage"], seconds(b["seconds"]), "-", "")
            continue
        fill = min(width, round(used / 100 * width))
        style = "red" if b["over"] else "green"
        bar = Text("█" * fill, style) + Text("░" * (width - fill), "dim")
        label = f" {used:.0f} %"
        budgets.add_row(b["stage"], seconds(b["seconds"]), seconds(b["targetSeconds"]), bar + label)
    facts = Text(
        f"opened {inc['openedAt']}   recovered {inc['recoveredAt'] or '-'}   "
        f"closed {inc['closedAt'] or '-'}   alarms {len(inc['alarmIds'])}   "
        f"instances {len(inc['affectedInstances'])}"
    )
    return Group(head, facts, Text(""), table, Text(""), budgets)


@incident_app.command("show")
def incident_show(
    incident: str, url: Url = None, token: Token = None, as_json: Json = False
) -> None:
    """One incident's timeline (the id or its first characters) and stage budgets."""
    c = client(url, token)
    ref = incident
    if len(ref) < 36:  # a prefix, as `vimha incidents` shows them
        found = [
            i["id"]
            for state in ("OPEN", "RECOVERED", "CLOSED", "MERGED")
            for i in c.json("GET", "/vim/v1/incidents", params={"state": state, "limit": 10000})
            if i["id"].startswith(ref)
        ]
        if len(found) == 1:
            ref = found[0]
    data = c.json("GET", f"/vim/v1/incidents/{ref}")
    if as_json:
        emit(data, True)
    else:
        out.print(timeline_view(data))


# -- correlation rules ----------------------------------------------------------------------
def rules_view(data: dict[str, Any]) -> Group:
    fwd = Table("name", "roots", "level", "dependents", "before", title="forward rules")
    for r in data["forward"]:
        deps = r["dependents"] if isinstance(r["dependents"], str) else ", ".join(r["dependents"])
        fwd.add_row(r["name"], ", ".join(r["roots"]), r["level"], deps, r["before"])
    back = Table(
        "name",
        "evidence",
        "level",
        "count",
        "window",
        "raises",
        "clears after",
        title="backward rules",
    )
    for r in data["backward"]:
        count = str(r["count"])
        if r["distinct"]:
            count += f" ({r['min_distinct']}+ {r['distinct']}s)"
        if r["min_recovered"]:
            count += f", {r['min_recovered']} recovered"
        back.add_row(
            r["name"],
            ", ".join(r["evidence"]),
            r["level"],
            count,
            r["window"],
            f"{r['raise']['fault_type']} ({r['raise']['severity']})",
            r["clear_after"] or "never",
        )
    lines = [Text(f"from {data['file']}")]
    if data.get("skipped"):
        lines.append(Text(f"skipped (no such level): {', '.join(data['skipped'])}", "dim"))
    if data.get("lastError"):
        lines.append(Text(f"last reload failed: {data['lastError']}", "red"))
    return Group(*lines, fwd, back)


@correlation_app.command("rules")
def correlation_rules(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """The rules in force."""
    data = client(url, token).json("GET", "/vim/v1/correlation/rules")
    if as_json:
        emit(data, True)
    else:
        out.print(rules_view(data))


@correlation_app.command("reload")
def correlation_reload(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """Read the rules file again (refused with the reason if it does not validate)."""
    data = client(url, token).json("POST", "/vim/v1/correlation/rules/reload")
    if as_json:
        emit(data, True)
    else:
        out.print(rules_view(data))
