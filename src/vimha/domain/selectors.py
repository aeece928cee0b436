"""ETSI NFV-SOL 013 clause 5.3 attribute selectors: all_fields, fields, exclude_fields,
exclude_default. With none given, exclude_default applies. Paths use "/" for nesting.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from vimha.domain.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Selector:
    mode: str  # "all", "default", "exclude"
    include: tuple[tuple[str, ...], ...] = ()
    exclude: tuple[tuple[str, ...], ...] = ()

    def apply(self, doc: dict[str, Any], default_excluded: frozenset[str]) -> dict[str, Any]:
        if self.mode == "all":
            return doc
        out = copy.deepcopy(doc)
        if self.mode == "exclude":
            for path in self.exclude:
                _drop(out, path)
            return out
        kept = {p[0] for p in self.include if len(p) == 1}
        for name in default_excluded - kept:
            out.pop(name, None)
        return out


def parse_selector(
    all_fields: str | None,
    fields: str | None,
    exclude_fields: str | None,
    exclude_default: str | None,
) -> Selector:
    """Validate the combination (SOL 013 table 5.3.2-1) and build a Selector."""
    if all_fields is not None:
        if fields is not None or exclude_fields is not None or exclude_default is not None:
            raise InvalidInput("all_fields cannot be combined with other attribute selectors")
        return Selector("all")
    if exclude_fields is not None:
        if fields is not None or exclude_default is not None:
            raise InvalidInput("exclude_fields cannot be combined with fields or exclude_default")
        return Selector("exclude", exclude=_paths(exclude_fields, "exclude_fields"))
    include = _paths(fields, "fields") if fields is not None else ()
    return Selector("default", include=include)


def _paths(text: str, name: str) -> tuple[tuple[str, ...], ...]:
    items = [p.strip() for p in text.split(",")]
    if not items or any(not p or any(not s for s in p.split("/")) for p in items):
        raise InvalidInput(f"{name}: expected a comma-separated list of attribute names")
    return tuple(tuple(p.split("/")) for p in items)


def _drop(doc: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)
