from __future__ import annotations

from pathlib import Path

import pytest

from vimha.config import load
from vimha.domain.errors import InvalidInput

TOKENS = {"auth": {"tokens": [{"name": "ops", "token": "x" * 20, "role": "operator"}]}}


def test_defaults_validate() -> None:
    cfg = load(None, TOKENS)
    assert cfg.api.base_url == "http://127.0.0.1:8470"
    assert cfg.delivery.retry_policy().initial == 0.2


def test_durations_in_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "delivery: {max_backoff: 1m, give_up_after: 2h}\nageing: {interval: 10m}\n"
        "auth: {token_file: /tmp/t}\n"
    )
    cfg = load(path)
    assert cfg.delivery.max_backoff == 60
    assert cfg.delivery.give_up_after == 7200
    assert cfg.ageing.interval == 600


@pytest.mark.parametrize(
    ("overrides", "complaint"),
    [
        ({"delivery": {"initial_backoff": 5, "max_backoff": 1}}, "initial_backoff"),
        ({"delivery": {"timeout": "2d"}}, "timeout must be shorter"),
        ({"delivery": {"flush_interval": 10}}, "flush_interval"),
        ({"api": {"port": 70000}}, "api.port"),
        ({"bogus": 1}, "bogus"),
        ({"auth": {"tokens": []}}, "never open"),
        ({"auth": {"tokens": [{"name": "a", "token": "short", "role": "admin"}]}}, "token"),
        ({"ageing": {"retention": {"clearedAlarms": {"HIGH": "1d"}}}}, "HIGH"),
        ({"topology": {"hierarchy": ["site", "site"]}}, "hierarchy"),
        ({"coordination": {"url": "zookeeper://x:1"}}, "etcd://"),
        ({"coordination": {"ttl": 1, "demote_after": 2}}, "step down"),
        ({"coordination": {"controllers": 3}}, "need etcd"),
        ({"coordination": {"url": "local:///tmp/c.db", "controllers": 2}}, "not distributed"),
        ({"fencing": {"delay": -1}}, "fencing.delay"),
        ({"heartbeat": {"detector": "magic"}}, "detector"),
    ],
)
def test_invalid_config_explains(overrides: dict[str, object], complaint: str) -> None:
    merged = {**TOKENS, **overrides}
    with pytest.raises(InvalidInput, match=complaint):
        load(None, merged)


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [")
    with pytest.raises(InvalidInput, match="YAML"):
        load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42")
    with pytest.raises(InvalidInput, match="mapping"):
        load(scalar)
