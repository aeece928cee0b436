"""Schema versions through Alembic, configured in code (no alembic.ini needed at run time)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

from vimha.domain.errors import SchemaMismatch

MIGRATIONS = Path(__file__).parent / "migrations"
MIGRATION_LOCK = 0x76696D6861  # "vimha"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> tuple[str | None, str]:
    """Migrate to head; returns (before, after)."""
    before = current_revision(engine)
    cfg = _config()
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # Several controllers started at once: one migrates, the others wait and find
            # the schema at head.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, head_revision()


def check(engine: Engine) -> None:
    """Raise SchemaMismatch unless the database is at this code's head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        raise SchemaMismatch(
            "the database has no vimha schema: run `vimha db upgrade` (with the same config)"
        )
    known = {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}
    if current not in known:
        raise SchemaMismatch(
            f"the database schema {current} is newer than this vimha knows (head {head}): "
            "upgrade vimha, or point it at another database"
        )
    raise SchemaMismatch(
        f"the database schema {current} is older than this vimha's {head}: run `vimha db upgrade`"
    )
