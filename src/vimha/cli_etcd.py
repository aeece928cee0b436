"""`vimha etcd-access`: etcd's users, roles and authentication for real hosts (issue 22), from
the agents' configs: each node's agent an etcd user of its own that may write only the keys
of its own service groups (and its switch's), each controller a user of the controllers'
role (vimha/etcdaccess.py plans, drivers/etcd_access.py applies; `vimha up --ha` does the
same for the embedded cloud). `plan` shows it; `apply` makes the password files where there
are none, applies the plan (idempotent: run it again after a node joins or leaves, or after a
new password is written into a file: a rotation) and says which URL each node uses."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode

import typer
from rich.table import Table

from vimha.cli import Json, app, emit, out
from vimha.domain.errors import InvalidInput
from vimha.etcdaccess import ROOT, AccessPlan, AgentAccess, group_access, plan_for

etcd_app = typer.Typer(
    no_args_is_help=True, help="etcd users and roles: a credential per agent and controller."
)
app.add_typer(etcd_app, name="etcd-access")

Configs = Annotated[list[Path], typer.Argument(help="Every node's agent config (agent.yaml)")]
Controllers = Annotated[
    str, typer.Option("--controllers", help="The control nodes running a controller: a,b,c")
]


def load_plan(configs: list[Path], controllers: str) -> AccessPlan:
    """The plan from the agents' configs (validated as `vimha agent` validates them; one
    vim for all) and the controllers' nodes."""
    from vimha.agent.main import load_agent_config

    agents, vims = [], set()
    for path in configs:
        config = load_agent_config(path)
        vims.add(config.vim)
        groups = tuple(group_access(g) for g in config.groups)
        agents.append(AgentAccess(config.node, groups, config.switch is not None))
    if len(vims) > 1:
        raise InvalidInput(f"etcd access: the agents name several vims: {', '.join(sorted(vims))}")
    ctls = [c.strip() for c in controllers.split(",") if c.strip()]
    if not ctls:
        raise InvalidInput("etcd access: --controllers names no node")
    return plan_for(vims.pop() if vims else "vimha", agents, ctls)


def _table(plan: AccessPlan) -> Table:
    table = Table("user", "node", "kind", "reads", "writes")
    for user in plan.users:
        perms = [p for r in plan.roles if r.name in user.roles for p in r.permissions]
        show = [f"{p.key}{'*' if p.prefix else ''}" for p in perms]
        writes = [s for s, p in zip(show, perms, strict=True) if p.write]
        reads = [s for s, p in zip(show, perms, strict=True) if not p.write]
        table.add_row(user.name, user.node, user.kind, "\n".join(reads), "\n".join(writes))
    return table


def _doc(plan: AccessPlan) -> dict[str, object]:
    return {
        "vim": plan.vim,
        "users": [{"name": u.name, "node": u.node, "kind": u.kind, "roles": list(u.roles)}
                  for u in plan.users],
        "roles": [{"name": r.name, "permissions": [
            {"key": p.key, "prefix": p.prefix, "write": p.write} for p in r.permissions]}
            for r in plan.roles],
    }  # fmt: skip


@etcd_app.command("plan")
def etcd_plan(configs: Configs, controllers: Controllers, as_json: Json = False) -> None:
    """Show who may read and write what (nothing is changed)."""
    plan = load_plan(configs, controllers)
    emit(_doc(plan), as_json, _table(plan))


@etcd_app.command("apply")
def etcd_apply(
    configs: Configs,
    controllers: Controllers,
    etcd: Annotated[
        str, typer.Option("--etcd", help="The cluster: etcd://host:port,host:port[?tls...]")
    ],
    passwords: Annotated[
        Path,
        typer.Option(
            "--passwords",
            help="Folder of <user>.password files (root's too), made 0600 where missing",
        ),
    ],
    node_folder: Annotated[
        Path,
        typer.Option("--node-folder", help="Where each node keeps its own password file"),
    ] = Path("/etc/vimha/etcd"),
    as_json: Json = False,
) -> None:
    """Apply the plan: users, roles, key ranges, then authentication on. Then copy each
    user's password file to its node (only that one) and give it the URL shown."""
    from vimha.drivers.etcd_access import apply_access, password_file, password_files

    if not etcd.startswith("etcd://"):
        raise InvalidInput(f"--etcd {etcd!r}: an etcd:// URL")
    plan = load_plan(configs, controllers)
    secrets = password_files(passwords, [ROOT, *(u.name for u in plan.users)])
    root = urlencode({"user": ROOT, "password_file": password_file(passwords, ROOT)}, safe="/")
    url = f"{etcd}{'&' if '?' in etcd else '?'}{root}"
    done = asyncio.run(apply_access(url, plan, secrets))
    uses = {
        u.name: f"{etcd}{'&' if '?' in etcd else '?'}"
        + urlencode({"user": u.name, "password_file": password_file(node_folder, u.name)}, safe="/")
        for u in plan.users
    }
    if as_json:
        emit({"changed": done, "urls": uses}, True)
        return
    for line in done or ["no change"]:
        out.print(line)
    table = Table("user", "node", "its coordination URL")
    for user in plan.users:
        table.add_row(user.name, user.node, uses[user.name])
    out.print(table)
