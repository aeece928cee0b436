"""migration and maintenance (issue 19): migrations of instances, maintenance sessions, the
inputs they receive (answers, abort, a host done) and the hosts they take out

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "migrations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(64)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_migrations_instance", "migrations", ["instance_id", "created_at"])
    op.create_index(
        "ix_migrations_active_instance",
        "migrations",
        ["instance_id"],
        unique=True,
        sqlite_where=sa.text("active"),
        postgresql_where=sa.text("active"),
    )
    op.create_index("ix_migrations_session", "migrations", ["session_id"])
    op.create_table(
        "maintenance_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "maintenance_inputs",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
    )
    op.create_index("ix_maintenance_inputs_session", "maintenance_inputs", ["session_id", "seq"])
    op.create_table(
        "host_maintenance",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("since", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("host_maintenance")
    op.drop_index("ix_maintenance_inputs_session", "maintenance_inputs")
    op.drop_table("maintenance_inputs")
    op.drop_table("maintenance_sessions")
    op.drop_index("ix_migrations_session", "migrations")
    op.drop_index("ix_migrations_active_instance", "migrations")
    op.drop_index("ix_migrations_instance", "migrations")
    op.drop_table("migrations")
