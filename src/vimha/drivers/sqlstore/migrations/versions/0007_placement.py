"""placement (issue 15): placement groups and their members, VNF operations, an instance's
placement notes, whether a VNF may be pre-empted

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "placement_groups",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("level", sa.String(64), nullable=False),
        sa.Column("max_per_domain", sa.Integer),
        sa.Column("vnf_id", sa.String(64)),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_placement_groups_vnf", "placement_groups", ["vnf_id"])
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), primary_key=True),
    )
    op.create_index("ix_group_members_instance", "group_members", ["instance_id"])
    op.create_table(
        "vnf_operations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("vnf_id", sa.String(64), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("result", sa.JSON, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
    )
    op.create_index("ix_vnf_operations_vnf", "vnf_operations", ["vnf_id"])
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("notes", sa.JSON))
    with op.batch_alter_table("vnfs") as batch:
        batch.add_column(
            sa.Column("preemptible", sa.Boolean, nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    with op.batch_alter_table("vnfs") as batch:
        batch.drop_column("preemptible")
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("notes")
    op.drop_table("vnf_operations")
    op.drop_table("group_members")
    op.drop_table("placement_groups")
