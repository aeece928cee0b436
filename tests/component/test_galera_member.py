"""A Galera member whose start was refused (it waits for the others' positions, or was told
to join a bootstrap still under way) has no process: that is a definite failure, so its agent
tries again after the restart backoff. Reported as a slow answer instead, the next try came
only after `start_grace` (30 s in the embedded clouds: `vimha up --stateful` took 70 s)."""

from __future__ import annotations

from pathlib import Path

from vimha.agent.galera_handler import GaleraHandler
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import MariadbHandlerConfig


async def test_a_member_not_running_is_a_definite_failure(tmp_path: Path) -> None:
    cfg = MariadbHandlerConfig.model_validate(
        {"type": "mariadb", "port": 3306, "galera": {"port": 4567}}
    )
    coord = LocalCoordination(SystemClock())
    handler = GaleraHandler("galera", "ctl-1", cfg, tmp_path, coord, "vim", ("ctl-1", "ctl-2"))
    handler.recovered = ("5ee99582-bb8d-11ec-9f1f-000000000000", 7, False)  # read by start()
    health = await handler.monitor()
    assert not health.healthy and health.definite, health
    assert health.position == 7 and "not started" in health.detail
