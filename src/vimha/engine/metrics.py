"""Prometheus metrics of the controller (exposed at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("vimha_fault_events_total", "Fault events ingested", ["source"], registry=REGISTRY)
ALARM_CHANGES = Counter(
    "vimha_alarm_changes_total", "Alarm changes by kind", ["kind"], registry=REGISTRY
)
DELIVERIES = Counter(
    "vimha_notification_attempts_total",
    "Notification delivery attempts",
    ["outcome"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "vimha_notification_delivery_seconds",
    "Time from a notification being stored to its successful delivery",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
    registry=REGISTRY,
)
PENDING = Gauge(
    "vimha_notifications_in_memory",
    "Notifications queued in memory for delivery",
    registry=REGISTRY,
)
PURGED = Counter(
    "vimha_aged_out_total", "Records removed by the ageing policy", ["kind"], registry=REGISTRY
)
# Insight (issue 20): what the correlation rules did, and each incident's stages.
CORRELATIONS = Counter(
    "vimha_correlation_actions_total",
    "Correlation rules' actions: alarms linked, suspicions raised and cleared",
    ["rule", "action"],
    registry=REGISTRY,
)
INCIDENTS = Counter(
    "vimha_incidents_total", "Incidents opened, by kind", ["kind"], registry=REGISTRY
)
INCIDENT_STAGE = Histogram(
    "vimha_incident_stage_seconds",
    "Time each stage of an incident took (detect, fence, place, boot, serve, total), "
    "observed once final (detection and fencing once known, the others once the "
    "incident's instances serve again)",
    ["stage", "kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
