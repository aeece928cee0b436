"""insight (issue 20): the instances' state journal (HA metrics), incidents and the steps
reported for them

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "instance_states",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task_state", sa.String(32)),
        sa.Column("power", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("incarnation", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("vnf_id", sa.String(64)),
        sa.Column("vdu", sa.String(255)),
        sa.Column("sal", sa.String(16)),
    )
    op.create_index("ix_instance_states_instance", "instance_states", ["instance_id", "seq"])
    op.create_index("ix_instance_states_at", "instance_states", ["at"])
    op.create_index("ix_instance_states_host", "instance_states", ["host", "at"])
    # Instances that exist already: their state now, so that their metrics start today.
    op.execute(
        "INSERT INTO instance_states (instance_id, at, status, task_state, power, host, "
        "incarnation, name, vnf_id, vdu, sal) SELECT id, updated_at, status, task_state, "
        "power, host, incarnation, name, vnf_id, vdu, COALESCE((SELECT vnfs.sal FROM vnfs "
        "WHERE vnfs.id = instances.vnf_id), 'LEVEL_3') FROM instances"
    )
    # The incidents loop starts from now: the alarm history before this upgrade opens none.
    bind = op.get_bind()
    settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.JSON))
    op.bulk_insert(
        settings,
        [
            {"key": f"insight.cursor.incidents.{name}", "value": int(seq or 0)}
            for name, seq in (
                ("alarms", bind.execute(sa.text("SELECT MAX(seq) FROM alarm_history")).scalar()),
                ("journal", bind.execute(sa.text("SELECT MAX(seq) FROM instance_states")).scalar()),
            )
        ],
    )
    op.create_table(
        "incident_reports",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("subject_type", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("instance_id", sa.String(64)),
        sa.Column("recorded_at", TS, nullable=False),
    )
    op.create_table(
        "incidents",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("recovered_at", TS),
        sa.Column("closed_at", TS),
        sa.Column("root_alarm_id", sa.String(64)),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("doc", sa.JSON, nullable=False),
    )
    op.create_index("ix_incidents_state", "incidents", ["state", "seq"])
    # one incident per root alarm: two holders overlapping in a hand-over never open two
    op.create_index("ix_incidents_root", "incidents", ["root_alarm_id"], unique=True)


def downgrade() -> None:
    op.execute("DELETE FROM settings WHERE key LIKE 'insight.cursor.%'")
    op.drop_index("ix_incidents_root", "incidents")
    op.drop_index("ix_incidents_state", "incidents")
    op.drop_table("incidents")
    op.drop_table("incident_reports")
    op.drop_index("ix_instance_states_host", "instance_states")
    op.drop_index("ix_instance_states_at", "instance_states")
    op.drop_index("ix_instance_states_instance", "instance_states")
    op.drop_table("instance_states")
