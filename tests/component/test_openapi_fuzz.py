"""Schemathesis against the served OpenAPI document: no 5xx and no response that breaks the
documented schema, on every operation (bounded: a few examples each)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.component.conftest import ADMIN
from vimha.api.app import create_app
from vimha.config import load
from vimha.controller import build_auth, open_store
from vimha.drivers.clock import SystemClock
from vimha.drivers.http_notifier import HttpNotifier
from vimha.engine.runtime import Runtime


def _app(path: Path):  # type: ignore[no-untyped-def]
    config = load(
        None,
        {
            "store": {"url": f"sqlite:///{path}"},
            "delivery": {"timeout": 0.5, "callback_test_timeout": 0.5},
            "auth": {"tokens": [{"name": "admin", "token": ADMIN, "role": "admin"}]},
        },
    )
    store = open_store(config, migrate=True)
    runtime = Runtime(config, store, HttpNotifier(0.5, 0.5), SystemClock())
    return create_app(runtime, build_auth(config)), store


_tmp = Path(__import__("tempfile").mkdtemp(prefix="vimha-fuzz-"))
APP, STORE = _app(_tmp / "fuzz.db")
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _close() -> Iterator[None]:
    yield
    STORE.close()


@schema.parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi(case: schemathesis.Case) -> None:
    case.call_and_validate(
        headers={"Authorization": f"Bearer {ADMIN}"},
        checks=[
            not_a_server_error,
            response_schema_conformance,
            content_type_conformance,
            status_code_conformance,
        ],
    )
