"""The OpenStack faces' pure parts: identity tokens' life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vimha.domain import identity
from vimha.domain.identity import IssuedToken

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def token(expires: datetime) -> IssuedToken:
    return IssuedToken("admin", "admin", "admin", ("password",), "a", T0, expires)


def test_a_token_traded_for_another_never_outlives_it() -> None:
    assert identity.expiry(T0, 3600) == T0 + timedelta(hours=1)
    parent = token(T0 + timedelta(minutes=10))
    assert identity.expiry(T0, 3600, parent) == T0 + timedelta(minutes=10)


def test_token_validity() -> None:
    t = token(T0 + timedelta(hours=1))
    assert t.valid_at(T0) and t.valid_at(T0 + timedelta(minutes=59))
    assert not t.valid_at(T0 + timedelta(hours=1))
    assert not t.valid_at(T0 - timedelta(minutes=1))  # issued in the future: a clock gone wrong


@pytest.mark.parametrize(
    ("ref", "ok"),
    [
        (None, True),
        ({"name": "Default"}, True),
        ({"id": "default"}, True),
        ({"name": "Other"}, False),
        ({}, False),
        ("Default", False),
    ],
)
def test_default_domain(ref: object, ok: bool) -> None:
    assert identity.in_default_domain(ref) is ok


def test_only_the_hash_of_a_token_is_kept() -> None:
    t = identity.new_token()
    assert len(t) >= 40 and identity.token_hash(t) != t and len(identity.token_hash(t)) == 64
