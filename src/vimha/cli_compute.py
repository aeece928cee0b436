"""`vimha` commands of the compute model (issue 14): images, flavors, networks, VNFs,
instances and their consoles. Registered on the main app by vimha.cli."""

from __future__ import annotations

import json
import os
import select
import sys
import termios
import threading
import time
import tty
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table

from vimha.cli import Json, Token, Url, app, client, emit, fail, out
from vimha.client import ClientError

images_app = typer.Typer(help="Images of the image store.", invoke_without_command=True)
flavors_app = typer.Typer(
    help="Flavors: vCPUs, RAM, disk, extra specs.", invoke_without_command=True
)
networks_app = typer.Typer(
    help="VNF networks with their subnet and pool.", invoke_without_command=True
)
vnf_app = typer.Typer(no_args_is_help=True, help="One VNF: create from a descriptor, show, delete.")
instance_app = typer.Typer(no_args_is_help=True, help="One instance: show, reboot, stop, ...")
app.add_typer(images_app, name="images")
app.add_typer(flavors_app, name="flavors")
app.add_typer(networks_app, name="networks")
app.add_typer(vnf_app, name="vnf")
app.add_typer(instance_app, name="instance")


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out_: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} {item!r}: expected KEY=VALUE", 2)
        out_[key] = value
    return out_


# -- images -------------------------------------------------------------------------------
@images_app.callback()
def images(ctx: typer.Context, url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """The images (without a subcommand: list them)."""
    if ctx.invoked_subcommand is not None:
        return
    data = client(url, token).json("GET", "/vim/v1/images")
    table = Table("id", "name", "status", "size", "format", "digest", "properties")
    for i in data:
        table.add_row(
            i["id"],
            i["name"],
            i["status"],
            str(i["size"]),
            i["diskFormat"],
            (i.get("digest") or "")[:19],
            json.dumps(i["properties"]),
        )
    emit(data, as_json, table)


@images_app.command("import")
def images_import(
    file: Path,
    name: Annotated[str | None, typer.Option("--name", help="Default: the file's name")] = None,
    disk_format: Annotated[str, typer.Option("--disk-format")] = "raw",
    prop: Annotated[list[str] | None, typer.Option("--property", help="KEY=VALUE")] = None,
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Register an image and upload FILE into the image store."""
    if not file.is_file():
        fail(f"{file}: no such file", 2)
    api = client(url, token)
    body = {
        "name": name or file.name,
        "diskFormat": disk_format,
        "properties": _pairs(prop, "--property"),
    }
    image = api.json("POST", "/vim/v1/images", json=body)
    with open(file, "rb") as fh:
        api.call(
            "PUT",
            f"/vim/v1/images/{image['id']}/file",
            content=fh,
            headers={"Content-Type": "application/octet-stream"},
        )
    image = api.json("GET", f"/vim/v1/images/{image['id']}")
    emit(image, as_json, None) if as_json else out.print(
        f"image {image['name']} {image['id']}: {image['size']} bytes, {image.get('digest')}"
    )


@images_app.command("delete")
def images_delete(image: str, url: Url = None, token: Token = None) -> None:
    client(url, token).call("DELETE", f"/vim/v1/images/{image}")
    out.print(f"image {image} deleted")


# -- flavors and networks -----------------------------------------------------------------
@flavors_app.callback()
def flavors(
    ctx: typer.Context, url: Url = None, token: Token = None, as_json: Json = False
) -> None:
    """The flavors (without a subcommand: list them)."""
    if ctx.invoked_subcommand is not None:
        return
    data = client(url, token).json("GET", "/vim/v1/flavors")
    table = Table("id", "name", "vCPUs", "RAM MiB", "disk GiB", "extra specs")
    for f in data:
        table.add_row(
            f["id"],
            f["name"],
            str(f["vcpus"]),
            str(f["ramMib"]),
            str(f["diskGib"]),
            json.dumps(f["extraSpecs"]),
        )
    emit(data, as_json, table)


@flavors_app.command("create")
def flavors_create(
    name: str,
    vcpus: Annotated[int, typer.Option("--vcpus")] = 1,
    ram: Annotated[int, typer.Option("--ram", help="MiB")] = 256,
    disk: Annotated[int, typer.Option("--disk", help="GiB")] = 1,
    spec: Annotated[list[str] | None, typer.Option("--spec", help="KEY=VALUE")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    body = {
        "name": name,
        "vcpus": vcpus,
        "ramMib": ram,
        "diskGib": disk,
        "extraSpecs": _pairs(spec, "--spec"),
    }
    flavor = client(url, token).json("POST", "/vim/v1/flavors", json=body)
    out.print(f"flavor {flavor['name']} {flavor['id']}")


@networks_app.callback()
def networks(
    ctx: typer.Context, url: Url = None, token: Token = None, as_json: Json = False
) -> None:
    """The VNF networks (without a subcommand: list them)."""
    if ctx.invoked_subcommand is not None:
        return
    data = client(url, token).json("GET", "/vim/v1/networks")
    table = Table("id", "name", "cidr", "gateway", "pool")
    for n in data:
        pool = n["allocationPool"]
        table.add_row(
            n["id"], n["name"], n["cidr"], n.get("gateway") or "", f"{pool['start']}-{pool['end']}"
        )
    emit(data, as_json, table)


@networks_app.command("create")
def networks_create(
    name: str,
    cidr: Annotated[str, typer.Option("--cidr")],
    gateway: Annotated[str | None, typer.Option("--gateway")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    body: dict[str, Any] = {"name": name, "cidr": cidr, "gateway": gateway}
    network = client(url, token).json("POST", "/vim/v1/networks", json=body)
    out.print(f"network {network['name']} {network['id']} {network['cidr']}")


# -- VNFs ---------------------------------------------------------------------------------
@app.command()
def vnfs(url: Url = None, token: Token = None, as_json: Json = False) -> None:
    """VNFs with their SAL, priority and instances."""
    data = client(url, token).json("GET", "/vim/v1/vnfs")
    table = Table("id", "name", "SAL", "priority", "instances")
    for v in data:
        table.add_row(
            v["id"],
            v["name"],
            v["sal"],
            str(v["priority"]),
            " ".join(f"{i['name']}:{i['status']}@{i['host']}" for i in v["instances"]),
        )
    emit(data, as_json, table)


@vnf_app.command("create")
def vnf_create(
    file: Annotated[Path, typer.Option("-f", "--file", help="The descriptor (YAML or JSON)")],
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
) -> None:
    """Create a VNF from its descriptor: every instance placed, or nothing."""
    try:
        descriptor = yaml.safe_load(file.read_text())
    except OSError as exc:
        fail(f"{file}: {exc.strerror}", 2)
    except yaml.YAMLError as exc:
        fail(f"{file}: not YAML or JSON: {exc}", 2)
    try:
        vnf = client(url, token).json("POST", "/vim/v1/vnfs", json=descriptor)
    except ClientError as exc:
        fail(str(exc), 2 if ": 400 " in str(exc) else 1)
    if as_json:
        emit(vnf, True)
        return
    out.print(f"VNF {vnf['name']} {vnf['id']}: {len(vnf['instances'])} instance(s)")
    for i in vnf["instances"]:
        out.print(f"  {i['name']} {i['id']} on {i['host']} ({i['status']})")


@vnf_app.command("show")
def vnf_show(vnf: str, url: Url = None, token: Token = None) -> None:
    emit(client(url, token).json("GET", f"/vim/v1/vnfs/{vnf}"), True)


@vnf_app.command("delete")
def vnf_delete(vnf: str, url: Url = None, token: Token = None) -> None:
    done = client(url, token).json("DELETE", f"/vim/v1/vnfs/{vnf}")
    out.print(f"VNF {done['name']} deleted (its instances are being deleted)")


# -- instances ----------------------------------------------------------------------------
@app.command()
def instances(
    url: Url = None,
    token: Token = None,
    as_json: Json = False,
    host: Annotated[str | None, typer.Option("--host")] = None,
    vnf: Annotated[str | None, typer.Option("--vnf", help="VNF id")] = None,
) -> None:
    """Instances with their state, host, incarnation and addresses."""
    terms = [f"(eq,host,{host})"] if host else []
    terms += [f"(eq,vnfId,{vnf})"] if vnf else []
    params = {"filter": ";".join(terms)} if terms else {}
    data = client(url, token).paged("/vim/v1/instances", params)
    table = Table("id", "name", "status", "task", "host", "inc", "addresses")
    for i in data:
        table.add_row(
            i["id"],
            i["name"],
            i["status"],
            i.get("taskState") or "",
            i.get("host") or "",
            str(i["incarnation"]),
            " ".join(f"{p['network']}={p['ip']}" for p in i["ports"]),
        )
    emit(data, as_json, table)


@instance_app.command("show")
def instance_show(instance: str, url: Url = None, token: Token = None) -> None:
    emit(client(url, token).json("GET", f"/vim/v1/instances/{instance}"), True)


@instance_app.command("actions")
def instance_actions(
    instance: str, url: Url = None, token: Token = None, as_json: Json = False
) -> None:
    data = client(url, token).json("GET", f"/vim/v1/instances/{instance}/actions")
    table = Table("started", "action", "user", "result", "message")
    for a in data:
        table.add_row(a["startedAt"], a["action"], a["user"], a["result"], a["message"])
    emit(data, as_json, table)


def _ask(
    instance: str, what: str, url: str | None, token: str | None, body: dict[str, Any] | None = None
) -> None:
    api = client(url, token)
    if what == "delete":
        done = api.json("DELETE", f"/vim/v1/instances/{instance}")
    else:
        done = api.json("POST", f"/vim/v1/instances/{instance}/{what}", json=body)
    out.print(f"{done['name']}: {done['status']} ({done.get('taskState') or 'done'})")


@instance_app.command("repair")
def instance_repair(instance: str, url: Url = None, token: Token = None) -> None:
    """Replace the instance from its spec (a new incarnation, fresh disk, same addresses)."""
    done = client(url, token).json("POST", f"/vim/v1/instances/{instance}/repair")
    out.print(
        f"{done['name']}: incarnation {done['incarnation']} on {done['host']} ({done['status']})"
    )


@instance_app.command("reboot")
def instance_reboot(
    instance: str,
    hard: Annotated[bool, typer.Option("--hard")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    _ask(instance, "reboot", url, token, {"type": "HARD" if hard else "SOFT"})


for _what in ("stop", "start", "pause", "unpause", "delete"):

    def _command(instance: str, url: Url = None, token: Token = None, _w: str = _what) -> None:
        _ask(instance, _w, url, token)

    instance_app.command(_what, help=f"{_what.capitalize()} the instance.")(_command)


# -- console ------------------------------------------------------------------------------
@app.command()
def console(
    instance: str,
    url: Url = None,
    token: Token = None,
    wait: Annotated[
        float, typer.Option("--wait", help="With input piped in: seconds to read output after")
    ] = 1.0,
) -> None:
    """The instance's serial console in this terminal (Ctrl-] quits). With input piped in,
    sends it, prints what the console says for --wait seconds, and exits."""
    from websockets.exceptions import InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    grant = client(url, token).json("POST", f"/vim/v1/instances/{instance}/console")
    try:
        ws = connect(grant["url"], open_timeout=10, max_size=None)
    except InvalidStatus as exc:
        fail(f"console refused: {exc.response.status_code} {exc.response.reason_phrase}")
    except (OSError, WebSocketException) as exc:
        fail(f"console unreachable: {exc}")
    with ws:
        if sys.stdin.isatty():
            _interactive(ws)
        else:
            for line in sys.stdin:
                ws.send(line.encode())
            deadline = time.monotonic() + wait
            while (left := deadline - time.monotonic()) > 0:
                try:
                    data = ws.recv(timeout=left)
                except TimeoutError:
                    break
                except WebSocketException:
                    break
                sys.stdout.buffer.write(data if isinstance(data, bytes) else data.encode())
                sys.stdout.flush()


def _interactive(ws: Any) -> None:
    from websockets.exceptions import WebSocketException

    out.print("console attached; Ctrl-] quits", highlight=False)
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    done = threading.Event()

    def pump() -> None:
        try:
            for data in ws:
                os.write(sys.stdout.fileno(), data if isinstance(data, bytes) else data.encode())
        except WebSocketException:
            pass
        done.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        tty.setraw(fd)
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            data = os.read(fd, 1024)
            if not data or b"\x1d" in data:
                break
            ws.send(data.replace(b"\r", b"\n"))
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        out.print("\nconsole detached", highlight=False)
