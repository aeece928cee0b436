"""Alembic environment: runs migrations on the connection vimha hands in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

import vimha.drivers.sqlstore.compute_tables
import vimha.drivers.sqlstore.maintenance
import vimha.drivers.sqlstore.openstack  # noqa: F401 - registers the OpenStack faces' tables
from vimha.drivers.sqlstore.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # pragma: no cover - only for `alembic` run by hand
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
