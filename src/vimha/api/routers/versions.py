from __future__ import annotations

from fastapi import APIRouter

from vimha.api.sol import API_VERSION
from vimha.api.sol_schemas import ApiVersionInformation

router = APIRouter(tags=["api versions"])

INFO: dict[str, object] = {
    "uriPrefix": "/vimfm/v1",
    "apiVersions": [{"version": API_VERSION, "isDeprecated": False}],
}


@router.get(
    "/vimfm/api_versions", response_model=ApiVersionInformation, response_model_exclude_none=True
)
def api_versions() -> dict[str, object]:
    """Supported versions of the fault-management API (no token needed)."""
    return INFO


@router.get(
    "/vimfm/v1/api_versions", response_model=ApiVersionInformation, response_model_exclude_none=True
)
def api_versions_v1() -> dict[str, object]:
    """Supported versions of the fault-management API (no token needed)."""
    return INFO
