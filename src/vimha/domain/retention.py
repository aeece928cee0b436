"""Ageing of alarms, history and notifications (FAULT-7).

Active alarms are never aged out. A cleared alarm is kept for the retention of the highest
severity it reached; its history goes with it. Delivered or expired notifications are kept
for `notifications`; pending ones are never purged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from vimha.domain.alarms import Severity
from vimha.domain.errors import InvalidInput

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
ALARM_SEVERITIES = tuple(s for s in Severity if s is not Severity.CLEARED)


def parse_duration(text: str | int | float) -> timedelta:
    """'7d', '12h', '30m', '45s' or a number of seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = _DURATION.match(str(text))
        if not match:
            raise InvalidInput(f"duration {text!r}: expected e.g. '7d', '12h', '30m', '45s'")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise InvalidInput(f"duration {text!r} must be positive")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    for unit in ("d", "h", "m"):
        size = _UNIT[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    cleared_alarms: dict[Severity, timedelta] = field(
        default_factory=lambda: {
            Severity.CRITICAL: timedelta(days=400),
            Severity.MAJOR: timedelta(days=90),
            Severity.MINOR: timedelta(days=30),
            Severity.WARNING: timedelta(days=7),
            Severity.INDETERMINATE: timedelta(days=7),
        }
    )
    notifications: timedelta = timedelta(days=7)

    def __post_init__(self) -> None:
        missing = [s.value for s in ALARM_SEVERITIES if s not in self.cleared_alarms]
        if missing:
            raise InvalidInput(f"retention: clearedAlarms lacks {', '.join(missing)}")

    def to_dict(self) -> dict[str, object]:
        return {
            "clearedAlarms": {
                s.value: format_duration(self.cleared_alarms[s]) for s in ALARM_SEVERITIES
            },
            "notifications": format_duration(self.notifications),
        }

    @classmethod
    def from_dict(
        cls, data: dict[str, object], base: RetentionPolicy | None = None
    ) -> RetentionPolicy:
        """Build from the API/config form; keys not given keep `base`'s values."""
        base = base or cls()
        cleared = dict(base.cleared_alarms)
        raw = data.get("clearedAlarms", {})
        if not isinstance(raw, dict):
            raise InvalidInput("retention: clearedAlarms must be an object of severity: duration")
        for key, value in raw.items():
            try:
                severity = Severity(key)
            except ValueError:
                raise InvalidInput(f"retention: unknown severity {key!r}") from None
            if severity is Severity.CLEARED:
                raise InvalidInput("retention: use the severity the alarm had, not CLEARED")
            cleared[severity] = parse_duration(value)
        unknown = set(data) - {"clearedAlarms", "notifications"}
        if unknown:
            raise InvalidInput(f"retention: unknown keys {sorted(unknown)}")
        notifications = base.notifications
        if "notifications" in data:
            notifications = parse_duration(data["notifications"])  # type: ignore[arg-type]
        return cls(cleared, notifications)


@dataclass(frozen=True, slots=True)
class PurgePlan:
    """Cut-off times: purge cleared alarms of severity S cleared before `alarms[S]`, and
    finished notifications created before `notifications`."""

    alarms: dict[Severity, datetime]
    notifications: datetime
    reason: str


def plan_purge(policy: RetentionPolicy, now: datetime) -> PurgePlan:
    cutoffs: dict[Severity, datetime] = {
        s: now - policy.cleared_alarms[s] for s in ALARM_SEVERITIES
    }
    reason = "ageing: " + ", ".join(
        f"cleared {s.value} > {format_duration(policy.cleared_alarms[s])}" for s in ALARM_SEVERITIES
    )
    return PurgePlan(cutoffs, now - policy.notifications, reason)
