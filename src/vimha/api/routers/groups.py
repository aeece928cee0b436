"""Service groups (issue 4, ARCH-10): members, roles, epochs, health and the last switch-over
with its timeline, as the members publish them in the coordination backend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.domain.errors import NotFound
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1", tags=["service groups"])


@router.get("/service-groups", summary="Every service group and its members' roles")
async def list_groups(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    return rt.groups.views()


@router.get("/service-groups/{name}", summary="One service group")
async def get_group(
    name: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, Any]:
    view = rt.groups.view(name)
    if view is None:
        raise NotFound(f"service group {name} is not known (no member has published it)")
    return view
