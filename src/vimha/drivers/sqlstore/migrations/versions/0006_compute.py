"""the compute model: flavors, images and their chunks, networks, ports, VNFs, instances,
compute hosts with their claims, instance actions, console tokens, key pairs (issue 14)

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "flavors",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("ram_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("extra_specs", sa.JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64)),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("disk_format", sa.String(32), nullable=False),
        sa.Column("container_format", sa.String(32), nullable=False),
        sa.Column("properties", sa.JSON, nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),
        sa.Column("min_disk_gib", sa.Integer, nullable=False),
        sa.Column("min_ram_mib", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_images_name", "images", ["name"])
    op.create_table(
        "image_chunks",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "networks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("subnet_id", sa.String(64), nullable=False, unique=True),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("gateway", sa.String(64)),
        sa.Column("pool_start", sa.String(64), nullable=False),
        sa.Column("pool_end", sa.String(64), nullable=False),
        sa.Column("mtu", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "ports",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("network_id", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(17), nullable=False, unique=True),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("instance_id", sa.String(64)),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("tags", sa.JSON, nullable=False),
        sa.Column("bond", sa.String(64)),
        sa.Column("owned", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.UniqueConstraint("network_id", "ip", name="uq_ports_network_ip"),
    )
    op.create_index("ix_ports_instance", "ports", ["instance_id"])
    op.create_table(
        "vnfs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sal", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("descriptor", sa.JSON, nullable=False),
        sa.Column("client_token", sa.String(255), unique=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("vnf_id", sa.String(64)),
        sa.Column("vdu", sa.String(255)),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("task_state", sa.String(32)),
        sa.Column("power", sa.String(16), nullable=False),
        sa.Column("host", sa.String(255)),
        sa.Column("incarnation", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("fault", sa.JSON),
        sa.Column("launched_at", TS),
        sa.Column("reboot_seq", sa.Integer, nullable=False),
        sa.Column("reboot_hard", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("project", sa.String(255), nullable=False),
        sa.Column("key_name", sa.String(255)),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("ix_instances_host", "instances", ["host"])
    op.create_index("ix_instances_vnf", "instances", ["vnf_id"])
    op.create_index("ix_instances_status", "instances", ["status"])
    op.create_table(
        "compute_hosts",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("ram_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("used_vcpus", sa.Integer, nullable=False),
        sa.Column("used_ram_mib", sa.Integer, nullable=False),
        sa.Column("used_disk_gib", sa.Integer, nullable=False),
        sa.Column("cpu_ratio", sa.Float, nullable=False),
        sa.Column("ram_ratio", sa.Float, nullable=False),
        sa.Column("disk_ratio", sa.Float, nullable=False),
        sa.Column("traits", sa.JSON, nullable=False),
        sa.Column("hypervisor", sa.String(32), nullable=False),
        sa.Column("generation", sa.BigInteger, nullable=False),
        sa.Column("reported", sa.JSON),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "allocations",
        sa.Column("instance_id", sa.String(64), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("vcpus", sa.Integer, nullable=False),
        sa.Column("ram_mib", sa.Integer, nullable=False),
        sa.Column("disk_gib", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_allocations_host", "allocations", ["host"])
    op.create_table(
        "instance_actions",
        sa.Column("seq", SEQ, primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_instance_actions_instance", "instance_actions", ["instance_id", "seq"])
    op.create_table(
        "console_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )
    op.create_table(
        "keypairs",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "keypairs",
        "console_tokens",
        "instance_actions",
        "allocations",
        "compute_hosts",
        "instances",
        "vnfs",
        "ports",
        "networks",
        "image_chunks",
        "images",
        "flavors",
    ):
        op.drop_table(table)
