"""A node's BMC over Redfish, through sushy (the client OpenStack Ironic uses).

Reads the power state, the system's health rollup and the chassis components (temperatures,
fans, power supplies), and fences: ComputerSystem.Reset ForceOff, then reads back until the
power is confirmed off. Every sushy or transport error becomes BmcUnreachable, here only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sushy
from sushy import auth as sushy_auth

from vimha.domain.classification import BmcView, HardwareHealth
from vimha.domain.errors import Temporary
from vimha.domain.hardware import Component, LogEntry

T = TypeVar("T")


class BmcUnreachable(Temporary):
    """The BMC did not answer, or answered nonsense."""


@dataclass(frozen=True, slots=True)
class BmcReading:
    power_on: bool | None
    health: HardwareHealth | None
    components: tuple[Component, ...]

    def failing(self) -> tuple[Component, ...]:
        return tuple(
            c for c in self.components if c.health is not HardwareHealth.OK and c.health is not None
        )

    def view(self) -> BmcView:
        detail = ", ".join(f"{c.name} {c.health.value}" for c in self.failing() if c.health)
        return BmcView(True, self.power_on, self.health, detail)


def _health(value: Any) -> HardwareHealth | None:
    text = str(getattr(value, "value", value) or "").lower()
    for health in HardwareHealth:
        if health.value.lower() in text:
            return health
    return None


def _power(value: Any) -> bool | None:
    text = str(getattr(value, "value", value) or "").lower()
    if text.endswith("on") and "off" not in text:
        return True
    return False if "off" in text else None


@contextmanager
def _translate(url: str) -> Iterator[None]:
    try:
        yield
    except (sushy.exceptions.SushyError, OSError, ValueError, AttributeError) as exc:
        raise BmcUnreachable(f"BMC {url}: {type(exc).__name__}: {exc}".strip()[:300]) from exc
    except Exception as exc:  # requests' errors and anything sushy lets through
        raise BmcUnreachable(f"BMC {url}: {type(exc).__name__}: {exc}"[:300]) from exc


class RedfishBmc:
    def __init__(
        self,
        url: str,
        user: str,
        password: str,
        timeout: float = 3.0,
        system: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self._system_path = system  # None: the first member of /redfish/v1/Systems
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = sushy.Sushy(
                f"{self.url}/redfish/v1",
                auth=sushy_auth.BasicAuth(self.user, self.password),
                verify=False,
                # sushy's default (10 retries, 3 s apart) would stall detection and fencing;
                # the health loop retries on its own schedule.
                server_side_retries=1,
                server_side_retries_delay=0.1,
            )
            self._conn._conn._session.request = _with_timeout(
                self._conn._conn._session.request, self.timeout
            )
        return self._conn

    @property
    def system_path(self) -> str:
        if self._system_path is None:
            with _translate(self.url):
                members = self._connection().get_system_collection().members_identities
                if not members:
                    raise BmcUnreachable(f"BMC {self.url}: no ComputerSystem")
                self._system_path = str(sorted(members)[0])
        return self._system_path

    def read(self, attempts: int = 3) -> BmcReading:
        """Read the BMC; retried on a fresh connection (BMCs often drop idle keep-alive
        connections, or one without answering), briefly: the caller polls anyway."""
        for attempt in range(1, attempts + 1):
            try:
                return self._read()
            except BmcUnreachable:
                if attempt == attempts:
                    raise
                self._conn = None
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _read(self) -> BmcReading:
        path = self.system_path
        with _translate(self.url):
            conn = self._connection()
            system = conn.get_system(path)
            components: list[Component] = []
            for link in system.json.get("Links", {}).get("Chassis") or []:
                components += _chassis_components(conn.get_chassis(link["@odata.id"]))
            rollup = _health(system.status.health_rollup) or _health(system.status.health)
            return BmcReading(_power(system.power_state), rollup, tuple(components))

    def read_log(self, limit: int = 200) -> list[LogEntry]:
        """The system's event log(s) (Redfish LogService entries, e.g. the SEL), the newest
        `limit` entries. sushy has no log resources: read as plain Redfish JSON."""
        path = self.system_path
        with _translate(self.url):
            conn = self._connection()._conn
            system = conn.get(path=path).json()
            link = (system.get("LogServices") or {}).get("@odata.id")
            if not link:
                return []
            entries: list[LogEntry] = []
            for member in conn.get(path=link).json().get("Members", []):
                service = conn.get(path=member["@odata.id"]).json()
                where = (service.get("Entries") or {}).get("@odata.id")
                if where:
                    for raw in conn.get(path=where).json().get("Members", [])[-limit:]:
                        if "Id" not in raw:  # a link, not expanded
                            raw = conn.get(path=raw["@odata.id"]).json()
                        entries.append(_log_entry(raw))
            return entries

    def force_off(
        self, confirm_within: float = 10.0, sleep: Callable[[float], None] = time.sleep
    ) -> bool:
        """Fence: ForceOff, then read back. True only once the power is confirmed off."""
        with _translate(self.url):
            system = self._connection().get_system(self.system_path)
            system.reset_system(sushy.ResetType.FORCE_OFF)
        deadline = time.monotonic() + confirm_within
        while time.monotonic() < deadline:
            try:
                if self.read().power_on is False:
                    return True
            except BmcUnreachable:
                pass
            sleep(0.1)
        return False

    def power_on(self) -> None:
        path = self.system_path
        with _translate(self.url):
            self._connection().get_system(path).reset_system(sushy.ResetType.ON)


def _log_entry(raw: dict[str, Any]) -> LogEntry:
    try:
        number = int(str(raw.get("Id", "0")).rsplit("/", 1)[-1])
    except ValueError:
        number = 0
    return LogEntry(
        number,
        str(raw.get("Created", "")),
        _health(raw.get("Severity")),
        str(raw.get("Message", ""))[:300],
        str(raw.get("SensorType", "")),
    )


def _chassis_components(chassis: Any) -> list[Component]:
    """Temperatures, fans and power supplies; a chassis may lack Thermal or Power."""
    out: list[Component] = []
    missing = (
        sushy.exceptions.MissingAttributeError,
        sushy.exceptions.ResourceNotFoundError,
        sushy.exceptions.MissingActionError,
    )
    try:
        thermal = chassis.thermal
        for t in thermal.temperatures or []:
            out.append(
                Component("temperature", t.name, _health(t.status.health), t.reading_celsius)
            )
        for f in thermal.fans or []:
            out.append(Component("fan", f.name, _health(f.status.health), f.reading))
    except missing:
        pass
    try:
        for p in chassis.power.power_supplies or []:
            out.append(Component("psu", p.name, _health(p.status.health)))
    except missing:
        pass
    return out


def _with_timeout(request: Callable[..., T], timeout: float) -> Callable[..., T]:
    def wrapped(*args: Any, **kwargs: Any) -> T:
        kwargs.setdefault("timeout", timeout)
        return request(*args, **kwargs)

    return wrapped
