"""The OpenStack faces' part of the Store port (ports/openstack.py), on SQLite and on a real
PostgreSQL: tokens kept as hashes with their expiry."""

from __future__ import annotations

from datetime import timedelta

from tests.contract.test_store import T0, store  # noqa: F401 - the drivers' fixture
from vimha.domain.identity import IssuedToken
from vimha.drivers.sqlstore import SqlStore


def token(user: str, expires_in: float) -> IssuedToken:
    return IssuedToken(
        user, "operator", "admin", ("password",), "audit", T0, T0 + timedelta(seconds=expires_in)
    )


def test_tokens_by_hash_until_they_expire_or_are_revoked(store: SqlStore) -> None:  # noqa: F811
    with store.unit_of_work() as uow:
        uow.openstack.add_token("h1", token("ops", 60), T0)
        uow.openstack.add_token("h2", token("old", 1), T0)
    assert store.openstack.token("h1", T0) == token("ops", 60)
    assert store.openstack.token("h2", T0 + timedelta(seconds=2)) is None  # expired
    assert store.openstack.token("nope", T0) is None
    # adding purges the expired ones
    with store.unit_of_work() as uow:
        uow.openstack.add_token("h3", token("new", 60), T0 + timedelta(seconds=5))
    assert store.openstack.token("h2", T0) is None
    with store.unit_of_work() as uow:
        assert uow.openstack.revoke_token("h1") is True
        assert uow.openstack.revoke_token("h1") is False
    assert store.openstack.token("h1", T0) is None
