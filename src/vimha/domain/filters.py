"""ETSI NFV-SOL 013 clause 5.2 attribute-based filtering.

    filter=(eq,perceivedSeverity,CRITICAL);(in,eventType,EQUIPMENT_ALARM,QOS_ALARM)

Expressions joined by ";" all must hold. Attribute paths use "/" to go deeper. A value that
holds ",", ")" or "'" is written in single quotes, with "'" doubled inside. On an array the
positive operators (eq, gt, ..., in, cont) hold if any element matches; the negative ones
(neq, nin, ncont) hold if no element matches the positive counterpart. An absent attribute
matches only the negative operators.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from vimha.domain.clock import parse_iso
from vimha.domain.errors import InvalidInput

ONE_VALUE_OPS = frozenset({"eq", "neq", "gt", "lt", "gte", "lte"})
MULTI_VALUE_OPS = frozenset({"in", "nin", "cont", "ncont"})
NEGATIVE = {"neq": "eq", "nin": "in", "ncont": "cont"}


@dataclass(frozen=True, slots=True)
class SimpleFilter:
    op: str
    path: tuple[str, ...]
    values: tuple[str, ...]

    @property
    def attribute(self) -> str:
        return "/".join(self.path)


@dataclass(frozen=True, slots=True)
class Filter:
    """A conjunction of simple filters; the empty filter matches everything."""

    terms: tuple[SimpleFilter, ...] = ()

    def matches(self, doc: Mapping[str, object]) -> bool:
        return all(_term_matches(term, doc) for term in self.terms)

    def mentions(self, attribute: str) -> bool:
        return any(t.path[0] == attribute for t in self.terms)


def parse_filter(text: str | None, known: Callable[[tuple[str, ...]], bool]) -> Filter:
    """Parse a filter expression; `known(path)` says whether an attribute path exists.

    Raises InvalidInput naming the offending part.
    """
    if text is None or text == "":
        return Filter()
    terms = []
    for raw in _split_top(text):
        if not (raw.startswith("(") and raw.endswith(")")) or len(raw) < 2:
            raise InvalidInput(f"filter: expected '(op,attribute,value)', got {raw!r}")
        parts = _split_values(raw[1:-1], raw)
        if len(parts) < 3:
            raise InvalidInput(f"filter: {raw!r} needs an operator, an attribute and a value")
        op, attr, values = parts[0], parts[1], tuple(parts[2:])
        if op not in ONE_VALUE_OPS and op not in MULTI_VALUE_OPS:
            raise InvalidInput(f"filter: unknown operator {op!r} in {raw!r}")
        if op in ONE_VALUE_OPS and len(values) != 1:
            raise InvalidInput(f"filter: operator {op!r} takes exactly one value in {raw!r}")
        path = tuple(attr.split("/"))
        if not attr or any(p == "" for p in path) or not known(path):
            raise InvalidInput(f"filter: unknown attribute {attr!r} in {raw!r}")
        terms.append(SimpleFilter(op, path, values))
    return Filter(tuple(terms))


def known_paths(paths: Iterable[str]) -> Callable[[tuple[str, ...]], bool]:
    """A `known` predicate from attribute paths; a path ending in "/*" allows any child."""
    exact = set()
    wild = set()
    for p in paths:
        if p.endswith("/*"):
            wild.add(tuple(p[:-2].split("/")))
        else:
            exact.add(tuple(p.split("/")))

    def known(path: tuple[str, ...]) -> bool:
        if path in exact:
            return True
        return any(len(path) == len(w) + 1 and path[: len(w)] == w for w in wild)

    return known


def _split_top(text: str) -> list[str]:
    """Split at ';' outside quotes and parentheses."""
    out, buf, depth, quoted = [], [], 0, False
    i = 0
    while i < len(text):
        ch = text[i]
        if quoted:
            buf.append(ch)
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    buf.append("'")
                    i += 1
                else:
                    quoted = False
        elif ch == "'":
            quoted = True
            buf.append(ch)
        elif ch == "(":
            depth += 1
            buf.append(ch)
        elif ch == ")":
            depth -= 1
            buf.append(ch)
        elif ch == ";" and depth == 0:
            out.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
        i += 1
    if quoted:
        raise InvalidInput(f"filter: unterminated quote in {text!r}")
    out.append("".join(buf))
    return out


def _split_values(inner: str, raw: str) -> list[str]:
    """Split at ',' outside quotes; unquote quoted items ('' -> ')."""
    parts: list[str] = []
    buf: list[str] = []
    i = 0
    quoted_item = False
    while i < len(inner):
        ch = inner[i]
        if ch == "'" and not buf and not quoted_item:
            j = i + 1
            while True:
                if j >= len(inner):
                    raise InvalidInput(f"filter: unterminated quote in {raw!r}")
                if inner[j] == "'":
                    if j + 1 < len(inner) and inner[j + 1] == "'":
                        buf.append("'")
                        j += 2
                        continue
                    break
                buf.append(inner[j])
                j += 1
            quoted_item = True
            i = j + 1
            if i < len(inner) and inner[i] != ",":
                raise InvalidInput(f"filter: text after a quoted value in {raw!r}")
            continue
        if ch == ",":
            parts.append("".join(buf))
            buf, quoted_item = [], False
        elif ch in "()'":
            raise InvalidInput(f"filter: {ch!r} must be inside a quoted value in {raw!r}")
        else:
            buf.append(ch)
        i += 1
    parts.append("".join(buf))
    return parts


def _resolve(doc: object, path: tuple[str, ...]) -> list[object]:
    """All leaf values at `path`, flattening arrays met on the way."""
    current: list[object] = [doc]
    for key in path:
        nxt: list[object] = []
        for item in current:
            items = item if isinstance(item, list) else [item]
            for element in items:
                if isinstance(element, Mapping) and key in element:
                    nxt.append(element[key])
        current = nxt
    flat: list[object] = []
    for value in current:
        if isinstance(value, list):
            flat.extend(value)
        elif value is not None:
            flat.append(value)
    return flat


def _term_matches(term: SimpleFilter, doc: Mapping[str, object]) -> bool:
    values = _resolve(doc, term.path)
    positive = NEGATIVE.get(term.op)
    if positive is not None:
        return not any(_compare(positive, v, term.values) for v in values)
    return any(_compare(term.op, v, term.values) for v in values)


def _compare(op: str, actual: object, wanted: tuple[str, ...]) -> bool:
    if op == "in":
        return any(_equal(actual, w) for w in wanted)
    if op == "cont":
        return any(w in str(actual) for w in wanted)
    if op == "eq":
        return _equal(actual, wanted[0])
    order = _order(actual, wanted[0])
    if order is None:
        return False
    return {"gt": order > 0, "lt": order < 0, "gte": order >= 0, "lte": order <= 0}[op]


def _equal(actual: object, wanted: str) -> bool:
    if isinstance(actual, bool):
        return wanted.lower() == ("true" if actual else "false")
    if isinstance(actual, int | float):
        try:
            return float(wanted) == float(actual)
        except ValueError:
            return False
    return str(actual) == wanted


def _order(actual: object, wanted: str) -> int | None:
    """-1, 0, 1 comparing actual with wanted; None if they cannot be compared."""
    a: float | str | datetime
    w: float | str | datetime
    if isinstance(actual, bool):
        return None
    if isinstance(actual, int | float):
        try:
            a, w = float(actual), float(wanted)
        except ValueError:
            return None
    else:
        a, w = str(actual), wanted
        with contextlib.suppress(ValueError):
            a, w = parse_iso(str(actual)), parse_iso(wanted)
    return (a > w) - (a < w)  # type: ignore[operator]
