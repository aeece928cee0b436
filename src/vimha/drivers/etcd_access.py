"""Applies an etcd access plan (vimha/etcdaccess.py) to a real cluster through the JSON
gateway, idempotently: the roles and their key ranges as planned (ranges no longer planned
revoked), the users with their passwords and roles, the users and roles of the plan's own
names that it no longer holds (a node gone) deleted, the `root` user, then authentication
enabled. Run again with the same plan it changes nothing but the passwords, which it sets
every time: a new password in a node's file, then this, is a rotation.
"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from vimha.domain.errors import InvalidInput
from vimha.drivers.coord_etcd import EtcdCoordination, prefix_end, read_password
from vimha.etcdaccess import ROOT, AccessPlan, EtcdRole, EtcdUser, Permission

EXISTS = ("already exists",)
# etcd hashes each password it is given with bcrypt: on a loaded machine one call takes
# seconds, far beyond the 1 s the leases' calls are bounded by
ADMIN_TIMEOUT = 15.0


def password_file(folder: Path, user: str) -> Path:
    return folder / f"{user}.password"


def password_files(folder: Path, users: Iterable[str]) -> dict[str, str]:
    """Each user's password from `<folder>/<user>.password`, made (random, 0600, in a 0700
    folder) where there is none yet; InvalidInput names a file that cannot be read."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = {}
    for user in users:
        path = password_file(folder, user)
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(24) + "\n")
        try:
            out[user] = read_password(path)
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"etcd access: password file {path}: {exc}") from None
    return out


def _range(p: Permission) -> tuple[str, str]:
    return base64.b64encode(p.key.encode()).decode(), prefix_end(p.key) if p.prefix else ""


async def apply_access(url: str, plan: AccessPlan, passwords: Mapping[str, str]) -> list[str]:
    """`url` names the cluster and `user=root&password_file=...` (root is made with that
    password when the cluster has no root yet); `passwords` holds each planned user's.
    Returns what changed, a line each."""
    coord = EtcdCoordination(url, timeout=ADMIN_TIMEOUT)
    try:
        if coord.creds is None or coord.creds.user != ROOT:
            raise InvalidInput("etcd access: the url must name user=root and its password_file")
        missing = sorted(u.name for u in plan.users if not passwords.get(u.name))
        if missing:
            raise InvalidInput(f"etcd access: no password for {', '.join(missing)}")
        return await _apply(coord, plan, passwords, coord.creds.password())
    finally:
        await coord.close()


async def _listed(coord: EtcdCoordination, what: str) -> set[str]:
    doc = await coord.call(f"auth/{what[:-1]}/list", {}) or {}
    return {str(n) for n in doc.get(what) or ()}


async def _apply(
    coord: EtcdCoordination, plan: AccessPlan, passwords: Mapping[str, str], root: str
) -> list[str]:
    done: list[str] = []
    if await coord.call("auth/user/add", {"name": ROOT, "password": root}, EXISTS) is not None:
        done.append("user root added")
    enabled = coord.token is not None  # authenticated: authentication is on already
    await coord.call("auth/role/add", {"name": ROOT}, EXISTS)  # implicit in some versions
    await coord.call("auth/user/grant", {"user": ROOT, "role": ROOT})
    roles = await _listed(coord, "roles")
    for role in plan.roles:
        done += await _role(coord, role, role.name in roles)
    users = await _listed(coord, "users")
    for user in plan.users:
        done += await _user(coord, user, passwords[user.name], user.name in users)
    for name in sorted(users - {u.name for u in plan.users}):
        if name.startswith(plan.managed):
            await coord.call("auth/user/delete", {"name": name})
            done.append(f"user {name} deleted (no longer planned)")
    for name in sorted(roles - {r.name for r in plan.roles}):
        if name.startswith(plan.managed):
            await coord.call("auth/role/delete", {"role": name})
            done.append(f"role {name} deleted (no longer planned)")
    await coord.call("auth/enable", {})
    if not enabled:
        done.append("authentication enabled")
    return done


async def _role(coord: EtcdCoordination, role: EtcdRole, exists: bool) -> list[str]:
    done = []
    if not exists:
        await coord.call("auth/role/add", {"name": role.name}, EXISTS)
        done.append(f"role {role.name} added")
    doc: dict[str, Any] = await coord.call("auth/role/get", {"role": role.name}) or {}
    have = {
        (str(p.get("key", "")), str(p.get("range_end", ""))): str(p.get("permType", "READ"))
        for p in doc.get("perm") or ()
    }
    want = {_range(p): "READWRITE" if p.write else "READ" for p in role.permissions}
    for key, end in sorted(have.keys() - want.keys()):
        await coord.call("auth/role/revoke", {"role": role.name, "key": key, "range_end": end})
        done.append(f"role {role.name}: a range no longer planned revoked")
    for p in role.permissions:
        key, end = _range(p)
        if have.get((key, end)) == want[(key, end)]:
            continue
        perm = {"key": key, "permType": want[(key, end)], **({"range_end": end} if end else {})}
        await coord.call("auth/role/grant", {"name": role.name, "perm": perm})
        done.append(
            f"role {role.name}: {want[(key, end)].lower()} {p.key}{'*' if p.prefix else ''}"
        )
    return done


async def _user(coord: EtcdCoordination, user: EtcdUser, password: str, exists: bool) -> list[str]:
    done = []
    if exists:
        await coord.call("auth/user/changepw", {"name": user.name, "password": password})
    else:
        await coord.call("auth/user/add", {"name": user.name, "password": password}, EXISTS)
        done.append(f"user {user.name} added")
    doc: dict[str, Any] = await coord.call("auth/user/get", {"name": user.name}) or {}
    have = {str(r) for r in doc.get("roles") or ()}
    for role in sorted(have - set(user.roles)):
        await coord.call("auth/user/revoke", {"name": user.name, "role": role})
        done.append(f"user {user.name}: role {role} revoked")
    for role in user.roles:
        if role not in have:
            await coord.call("auth/user/grant", {"user": user.name, "role": role})
            done.append(f"user {user.name}: role {role} granted")
    return done
