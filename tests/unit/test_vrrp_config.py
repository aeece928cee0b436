"""The keepalived configuration a `keepalived` member runs with (agent/vrrp.py)."""

from __future__ import annotations

from pathlib import Path

from vimha.agent.vrrp import render
from vimha.groupspec import KeepalivedHandlerConfig


def config(**kw: object) -> KeepalivedHandlerConfig:
    return KeepalivedHandlerConfig.model_validate(
        {"interface": "mgmt", "vip": "10.100.1.250/24", "priority": 110, **kw}
    )


def test_a_returning_balancer_does_not_take_the_address_back_unless_asked() -> None:
    text = render("ctl-1", config())
    assert "state BACKUP" in text and "nopreempt" in text
    assert "priority 110" in text and "advert_int 0.1" in text and "10.100.1.250/24" in text
    assert "nopreempt" not in render("ctl-1", config(preempt=True))


def test_a_tracked_balancer_makes_keepalived_watch_a_file_whose_non_zero_is_a_fault() -> None:
    assert "track_file" not in render("ctl-1", config())
    text = render("ctl-1", config(track="lb"), Path("/run/vimha/keepalived-vip.track"))
    assert 'file "/run/vimha/keepalived-vip.track"' in text
    assert "vimha_track weight 0" in text  # weight 0: any non-zero value is FAULT
