"""the controller that delivers each notification, so that another takes over its backlog

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("owner", sa.String(length=255), nullable=True))
        batch.create_index("ix_deliveries_owner", ["status", "owner"])


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_index("ix_deliveries_owner")
        batch.drop_column("owner")
