from __future__ import annotations

import pytest

from vimha.domain.errors import InvalidInput
from vimha.domain.selectors import parse_selector

DOC = {"id": "1", "a": {"x": 1, "y": 2}, "b": [1, 2], "c": "z"}
DEFAULT_EXCLUDED = frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ((None, None, None, None), {"id", "c"}),
        (("", None, None, None), {"id", "a", "b", "c"}),
        ((None, "a", None, None), {"id", "a", "c"}),
        ((None, "a", None, ""), {"id", "a", "c"}),
        ((None, None, "c,b", None), {"id", "a"}),
        ((None, None, None, ""), {"id", "c"}),
    ],
)
def test_selectors(args: tuple[str | None, ...], keys: set[str]) -> None:
    assert set(parse_selector(*args).apply(DOC, DEFAULT_EXCLUDED)) == keys


def test_nested_exclusion_does_not_touch_the_original() -> None:
    result = parse_selector(None, None, "a/x", None).apply(DOC, DEFAULT_EXCLUDED)
    assert result["a"] == {"y": 2}
    assert DOC["a"] == {"x": 1, "y": 2}


@pytest.mark.parametrize(
    "args",
    [
        ("", "a", None, None),
        ("", None, "a", None),
        (None, "a", "b", None),
        (None, None, "a", ""),
        (None, "a,,b", None, None),
        (None, None, "a//b", None),
    ],
)
def test_invalid_combinations(args: tuple[str | None, ...]) -> None:
    with pytest.raises(InvalidInput):
        parse_selector(*args)
