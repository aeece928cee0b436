"""Shared dependencies: the runtime, SOL 013 query parameters."""

from __future__ import annotations

from fastapi import Query, Request

from vimha.domain.selectors import Selector, parse_selector
from vimha.engine.runtime import Runtime


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


FILTER = Query(None, description="SOL 013 filter, e.g. (eq,perceivedSeverity,CRITICAL)")
MARKER = Query(None, description="Opaque marker of the next page (from the Link header)")


def selector(
    all_fields: str | None = Query(None, description="Include all complex attributes"),
    fields: str | None = Query(None, description="Complex attributes to include"),
    exclude_fields: str | None = Query(None, description="Attributes to exclude"),
    exclude_default: str | None = Query(None, description="Exclude the default-excluded set"),
) -> Selector:
    return parse_selector(all_fields, fields, exclude_fields, exclude_default)
