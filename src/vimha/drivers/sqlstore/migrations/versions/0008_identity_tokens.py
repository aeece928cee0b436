"""the OpenStack faces: the tokens the Identity face issues, hashed, with an expiry
(issue 16)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "identity_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("project", sa.String(255)),
        sa.Column("methods", sa.JSON, nullable=False),
        sa.Column("audit_id", sa.String(32), nullable=False),
        sa.Column("issued_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_index("ix_identity_tokens_expires", "identity_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_identity_tokens_expires", "identity_tokens")
    op.drop_table("identity_tokens")
