"""A watched host as the API shows it (`GET /vim/v1/hosts/{id}`)."""

from __future__ import annotations

from typing import Any

from vimha.domain.classification import BmcView, HealthStatus
from vimha.domain.clock import iso
from vimha.engine.health_state import HealthState


class HostViews(HealthState):
    """Renders a watched host for the API."""

    def _bmc_json(self, host: str) -> dict[str, Any] | None:
        if host not in self.bmcs:
            return None
        read_at, bmc = self.bmc_views.get(host, (None, BmcView(False, detail="not read yet")))
        return {
            "url": self.bmcs[host].url,
            "reachable": bmc.reachable,
            "powerState": None if bmc.power_on is None else ("On" if bmc.power_on else "Off"),
            "health": bmc.health.value if bmc.health else None,
            "detail": bmc.detail,
            "readMsAgo": None
            if read_at is None
            else round((self.clock.monotonic() - read_at) * 1000),
        }

    def _fencing_json(self, host: str) -> dict[str, Any]:
        state = self.fencer.state(host)
        return {
            "state": state.phase.value,
            "failureKind": state.kind.value if state.kind else None,
            "attempts": state.attempts,
            "detail": state.detail,
            "recoverable": state.recoverable,
        }

    def view(self, host: str) -> dict[str, Any] | None:
        cfg = self.hosts.get(host)
        if cfg is None:
            return None
        now = self.clock.monotonic()
        cls = self.current.get(host)
        planes = {}
        for p in self.planes[host]:
            st = self.states[(host, p)]
            planes[p] = {
                "status": st.status.value,
                "lastHeardMsAgo": None
                if st.last_heard is None
                else round((now - st.last_heard) * 1000),
            }
        return {
            "id": host,
            "source": self.source[host],
            "roles": list(cfg.roles),
            "capacities": None
            if cfg.capacities is None
            else {
                "vcpus": cfg.capacities.vcpus,
                "ramMiB": cfg.capacities.ram_mib,
                "diskGiB": cfg.capacities.disk_gib,
            },
            "location": self.locations[host].as_dict(),
            "healthStatus": cls.health.value if cls else HealthStatus.UNKNOWN.value,
            "failureKind": cls.kind.value if cls and cls.kind else None,
            "reason": cls.reason if cls else "not evaluated yet",
            "planes": planes,
            "services": self.services.of(host),
            "bmc": self._bmc_json(host),
            "fencing": self._fencing_json(host),
            "maintenance": self.maintenance.get(host),
            "observedAt": iso(self.clock.now()),
            "_links": {"self": {"href": f"{self.config.api.base_url}/vim/v1/hosts/{host}"}},
        }
