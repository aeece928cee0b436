"""Compute v2.1: os-server-groups over vimha's placement groups (issue 15): the 2.64 form
(`policy` and `rules`) and the older one (`policies`).

Every policy of Nova is enforced by the scheduler, hard ones never broken (a server one
more than a hard rule allows ends in ERROR with Nova's "No valid host" fault), soft ones
weighed. `rules`: `max_server_per_host` (anti-affinity policies; at most that many members
per domain) and vimha's `vimha:level` (the level the rule applies at: host by default,
rack, zone, site, or any level the hosts' locations declare): `{"max_server_per_host": 1,
"vimha:level": "rack"}` is at most one member per rack.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.api.openstack import microversions
from vimha.api.openstack.common import body, member
from vimha.domain.affinity import GroupPolicy, PlacementGroup
from vimha.domain.errors import InvalidInput, NotFound
from vimha.domain.identity import PROJECT
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/compute/v2.1", include_in_schema=False)
MAX_PER_HOST = "max_server_per_host"
LEVEL = "vimha:level"


def rules_of(g: PlacementGroup) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if g.max_per_domain is not None:
        out[MAX_PER_HOST] = g.max_per_domain
    if g.level != "host":
        out[LEVEL] = g.level
    return out


def view(g: PlacementGroup, members: list[str], v: microversions.Version) -> dict[str, Any]:
    out: dict[str, Any] = {"id": g.id, "name": g.name, "members": members}
    if v >= (2, 64):
        out |= {"policy": g.policy.value, "rules": rules_of(g)}
    else:
        out |= {"policies": [g.policy.value], "metadata": {}}
    if v >= (2, 13):
        out |= {"project_id": PROJECT, "user_id": ""}
    return out


def parse_rules(policy: GroupPolicy, rules: object) -> tuple[str, int | None]:
    """(level, max per domain) from Nova's rules; InvalidInput naming the rule."""
    if not isinstance(rules, dict):
        raise InvalidInput("rules: an object")
    unknown = set(rules) - {MAX_PER_HOST, LEVEL}
    if unknown:
        raise InvalidInput(f"rules: {', '.join(sorted(unknown))} unknown ({MAX_PER_HOST}, {LEVEL})")
    limit = rules.get(MAX_PER_HOST)
    if limit is not None:
        if not policy.apart:
            raise InvalidInput(f"rules.{MAX_PER_HOST}: only with an anti-affinity policy")
        if isinstance(limit, str) and limit.isdigit():
            limit = int(limit)  # as Nova accepts it (`openstack --rule` sends a string)
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise InvalidInput(f"rules.{MAX_PER_HOST}: an integer of at least 1")
    level = rules.get(LEVEL, "host")
    if not isinstance(level, str) or not level:
        raise InvalidInput(f"rules.{LEVEL}: the name of a level")
    return level, limit


def _group(rt: Runtime, ref: str) -> PlacementGroup:
    try:
        return rt.store.compute.group(ref)
    except NotFound:
        raise NotFound(f"Instance group {ref} could not be found.") from None


@router.get("/os-server-groups")
def list_groups(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    v = microversions.of(request)
    return {
        "server_groups": [
            view(g, sorted(rt.store.compute.members(g.id)), v) for g in rt.store.compute.groups()
        ]
    }


@router.post("/os-server-groups")
async def create_group(
    request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Any:
    v = microversions.of(request)
    g = member(await body(request), "server_group")
    name = g.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= 255:
        raise InvalidInput("Invalid input for field/attribute name: 1 to 255 characters")
    if v >= (2, 64):
        if "policies" in g:
            raise InvalidInput("policies: from 2.64 give policy (and rules)")
        policy, rules = g.get("policy"), g.get("rules") or {}
    else:
        policies = g.get("policies")
        if not isinstance(policies, list) or len(policies) != 1:
            raise InvalidInput("Invalid input for field/attribute policies: one policy")
        if "rules" in g:
            raise InvalidInput("rules: from microversion 2.64")
        policy, rules = policies[0], {}
    try:
        chosen = GroupPolicy(str(policy))
    except ValueError:
        allowed = ", ".join(p.value for p in GroupPolicy)
        raise InvalidInput(f"policy: {policy!r} is not one of {allowed}") from None
    level, limit = parse_rules(chosen, rules)
    group = await run_in_threadpool(rt.compute.create_group, name, chosen, level, limit)
    return {"server_group": view(group, [], v)}


@router.get("/os-server-groups/{group_id}")
def show_group(
    group_id: str, request: Request, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> Any:
    g = _group(rt, group_id)
    members = sorted(rt.store.compute.members(g.id))
    return {"server_group": view(g, members, microversions.of(request))}


@router.delete("/os-server-groups/{group_id}", status_code=204)
def delete_group(
    group_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    """409 while it has members (Nova would let them be)."""
    g = _group(rt, group_id)
    rt.compute.run(lambda uow, done: uow.compute.delete_group(g.id))
    return Response(status_code=204)
