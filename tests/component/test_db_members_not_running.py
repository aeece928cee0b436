"""A database member with nothing running is a definite failure, so its agent tries its
start again after the restart backoff. Reported as a slow answer instead, the next try came
only after `start_grace` (30 s in the embedded clouds): a Galera member whose start waited
for the others' positions (`vimha up --stateful` took 70 s), a PostgreSQL standby with no
data yet whose active came up a moment later (`vimha up --ha` 42 s: the controllers' schema
commit waited for a standby, ANY 1)."""

from __future__ import annotations

from pathlib import Path

from vimha.agent.galera_handler import GaleraHandler
from vimha.agent.pg_handler import PostgresHandler
from vimha.drivers.clock import SystemClock
from vimha.drivers.coord_local import LocalCoordination
from vimha.groupspec import MariadbHandlerConfig, PostgresHandlerConfig


async def test_a_galera_member_not_running_is_a_definite_failure(tmp_path: Path) -> None:
    cfg = MariadbHandlerConfig.model_validate(
        {"type": "mariadb", "port": 3306, "galera": {"port": 4567}}
    )
    coord = LocalCoordination(SystemClock())
    handler = GaleraHandler("galera", "ctl-1", cfg, tmp_path, coord, "vim", ("ctl-1", "ctl-2"))
    handler.recovered = ("5ee99582-bb8d-11ec-9f1f-000000000000", 7, False)  # read by start()
    health = await handler.monitor()
    assert not health.healthy and health.definite, health
    assert health.position == 7 and "not started" in health.detail


async def test_a_postgresql_standby_without_data_is_a_definite_failure(tmp_path: Path) -> None:
    cfg = PostgresHandlerConfig.model_validate({"type": "postgresql", "port": 5432})
    handler = PostgresHandler("db", "ctl-2", cfg, tmp_path, LocalCoordination(SystemClock()), "vim")
    health = await handler.monitor()
    assert not health.healthy and health.definite, health
    assert "waiting for an active to clone" in health.detail
    assert health.empty  # published: a free slot does not wait for it (domain/groups.py)
