"""Table definitions. Changes here need an Alembic migration in migrations/versions."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)

metadata = MetaData()

# BigInteger primary keys become INTEGER on SQLite so that they alias the rowid.
SeqType = BigInteger().with_variant(Integer(), "sqlite")

alarms = Table(
    "alarms",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("dedup_key", String(512), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("managed_object_id", String(255), nullable=False),
    Column("vim_connection_id", String(255), nullable=False),
    Column("resource_id", String(255), nullable=False),
    Column("vim_level_resource_type", String(64), nullable=False),
    Column("faulty_resource_type", String(16), nullable=False),
    Column("raised_time", DateTime(timezone=True), nullable=False),
    Column("changed_time", DateTime(timezone=True)),
    Column("cleared_time", DateTime(timezone=True)),
    Column("acknowledged_time", DateTime(timezone=True)),
    Column("ack_state", String(16), nullable=False),
    Column("perceived_severity", String(16), nullable=False),
    Column("peak_severity", String(16), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("fault_type", String(255), nullable=False),
    Column("probable_cause", String(512), nullable=False),
    Column("is_root_cause", Boolean, nullable=False),
    Column("correlated_alarm_ids", JSON, nullable=False),
    Column("fault_details", JSON, nullable=False),
    Column("location", JSON, nullable=False),
    Column("version", Integer, nullable=False),
    Index(
        "ix_alarms_active_dedup",
        "dedup_key",
        unique=True,
        sqlite_where=text("active"),
        postgresql_where=text("active"),
    ),
    Index("ix_alarms_cleared", "active", "peak_severity", "cleared_time"),
    Index("ix_alarms_object", "managed_object_id"),
)

alarm_history = Table(
    "alarm_history",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("alarm_id", String(64), ForeignKey("alarms.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("perceived_severity", String(16), nullable=False),
    Column("ack_state", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Index("ix_alarm_history_alarm", "alarm_id", "seq"),
)

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("callback_uri", Text, nullable=False),
    Column("dedup", Text, nullable=False, unique=True),
    Column("filter", JSON, nullable=False),
    Column("authentication", JSON),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

notifications = Table(
    "notifications",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("notification_type", String(64), nullable=False),
    Column("object_id", String(255), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_notifications_created", "created_at"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column(
        "subscription_id",
        String(64),
        ForeignKey("subscriptions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column(
        "notification_seq",
        SeqType,
        ForeignKey("notifications.seq", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True)),
    Column("delivered_at", DateTime(timezone=True)),
    Column("last_duration_ms", Float),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # The controller that delivers it; another takes over when this one is gone.
    Column("owner", String(255)),
    Index("ix_deliveries_pending", "status", "seq"),
    Index("ix_deliveries_owner", "status", "owner"),
    Index("ix_deliveries_subscription", "subscription_id", "seq"),
    Index("ix_deliveries_notification", "notification_seq"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column(
        "delivery_seq",
        SeqType,
        ForeignKey("deliveries.seq", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_delivery_attempts_delivery", "delivery_seq", "seq"),
)

settings = Table(
    "settings",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", JSON, nullable=False),
)

# Every fencing attempt and its result (issue 3): no recovery without a confirmed one.
fence_records = Table(
    "fence_records",
    metadata,
    Column("seq", SeqType, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    Column("failure_kind", String(64), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Index("ix_fence_records_host", "host", "seq"),
)

# Hosts declared through the API (those of the config file are not stored): the declaration
# as the API validated it.
hosts = Table(
    "hosts",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Services declared through the API for a host; its agent fetches and supervises them.
services = Table(
    "services",
    metadata,
    Column("host", String(255), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("spec", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
