"""Tables of the compute model (issue 14). Changes here need an Alembic migration."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

from vimha.drivers.sqlstore.tables import SeqType, metadata

flavors = Table(
    "flavors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("vcpus", Integer, nullable=False),
    Column("ram_mib", Integer, nullable=False),
    Column("disk_gib", Integer, nullable=False),
    Column("extra_specs", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

images = Table(
    "images",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("digest", String(64)),
    Column("size", BigInteger, nullable=False),
    Column("disk_format", String(32), nullable=False),
    Column("container_format", String(32), nullable=False),
    Column("properties", JSON, nullable=False),
    Column("visibility", String(16), nullable=False),
    Column("min_disk_gib", Integer, nullable=False),
    Column("min_ram_mib", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_images_name", "name"),
)

# The image store: content-addressed chunks, replicated with the database itself, so that
# every controller can serve every image (and a standby database holds them too).
image_chunks = Table(
    "image_chunks",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("data", LargeBinary, nullable=False),
)

networks = Table(
    "networks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("subnet_id", String(64), nullable=False, unique=True),
    Column("cidr", String(64), nullable=False),
    Column("gateway", String(64)),
    Column("pool_start", String(64), nullable=False),
    Column("pool_end", String(64), nullable=False),
    Column("mtu", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ports = Table(
    "ports",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("network_id", String(64), nullable=False),
    Column("mac", String(17), nullable=False, unique=True),
    Column("ip", String(64), nullable=False),
    Column("instance_id", String(64)),
    Column("name", String(255), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("bond", String(64)),
    # Made for an instance (deleted with it) or by a user (kept, unbound).
    Column("owned", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("network_id", "ip", name="uq_ports_network_ip"),
    Index("ix_ports_instance", "instance_id"),
)

vnfs = Table(
    "vnfs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("sal", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("descriptor", JSON, nullable=False),
    Column("client_token", String(255), unique=True),
    Column("status", String(32), nullable=False),
    Column("preemptible", Boolean, nullable=False, server_default=true()),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("vnf_id", String(64)),
    Column("vdu", String(255)),
    Column("idx", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("task_state", String(32)),
    Column("power", String(16), nullable=False),
    Column("host", String(255)),
    Column("incarnation", Integer, nullable=False),
    Column("spec", JSON, nullable=False),
    Column("fault", JSON),
    Column("launched_at", DateTime(timezone=True)),
    Column("reboot_seq", Integer, nullable=False),
    Column("reboot_hard", Boolean, nullable=False),
    Column("version", Integer, nullable=False),
    Column("project", String(255), nullable=False),
    Column("key_name", String(255)),
    Column("notes", JSON),  # placement: soft rules not kept, pre-emption, reserve alarms
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_instances_host", "host"),
    Index("ix_instances_vnf", "vnf_id"),
    Index("ix_instances_status", "status"),
)

# A compute host as a resource provider: capacity, usage and a generation that every claim
# compares and bumps (several schedulers never over-commit a host).
compute_hosts = Table(
    "compute_hosts",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("vcpus", Integer, nullable=False),
    Column("ram_mib", Integer, nullable=False),
    Column("disk_gib", Integer, nullable=False),
    Column("used_vcpus", Integer, nullable=False),
    Column("used_ram_mib", Integer, nullable=False),
    Column("used_disk_gib", Integer, nullable=False),
    Column("cpu_ratio", Float, nullable=False),
    Column("ram_ratio", Float, nullable=False),
    Column("disk_ratio", Float, nullable=False),
    Column("traits", JSON, nullable=False),
    Column("hypervisor", String(32), nullable=False),
    Column("generation", BigInteger, nullable=False),
    Column("reported", JSON),  # what its agent last said it has
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

allocations = Table(
    "allocations",
    metadata,
    Column("instance_id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("ram_mib", Integer, nullable=False),
    Column("disk_gib", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_allocations_host", "host"),
)

instance_actions = Table(
    "instance_actions",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("instance_id", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("user", String(255), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("result", String(16), nullable=False),
    Column("message", Text, nullable=False),
    Index("ix_instance_actions_instance", "instance_id", "seq"),
)

# One-time console tokens (VNF-12): only their hash is kept; valid on every controller.
console_tokens = Table(
    "console_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("instance_id", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)

keypairs = Table(
    "keypairs",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("public_key", Text, nullable=False),
    Column("fingerprint", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Placement groups (issue 15): Nova's server groups at any level; their generation is
# compared and bumped by every claim of a member, so concurrent schedulers never break a
# hard rule.
placement_groups = Table(
    "placement_groups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("policy", String(32), nullable=False),
    Column("level", String(64), nullable=False),
    Column("max_per_domain", Integer),
    Column("vnf_id", String(64)),
    Column("generation", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_placement_groups_vnf", "vnf_id"),
)

group_members = Table(
    "group_members",
    metadata,
    Column("group_id", String(64), primary_key=True),
    Column("instance_id", String(64), primary_key=True),
    Index("ix_group_members_instance", "instance_id"),
)

# LCM operations on a VNF (scale), as SOL 003's operation occurrences.
vnf_operations = Table(
    "vnf_operations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("vnf_id", String(64), nullable=False),
    Column("operation", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("params", JSON, nullable=False),
    Column("result", JSON, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_vnf_operations_vnf", "vnf_id"),
)
