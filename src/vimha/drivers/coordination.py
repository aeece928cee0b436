"""The coordination backend for a URL: `etcd://host:port,...` or `local://`."""

from __future__ import annotations

from vimha.domain.clock import Clock
from vimha.domain.errors import InvalidInput
from vimha.drivers.coord_etcd import EtcdCoordination
from vimha.drivers.coord_local import LocalCoordination
from vimha.ports.coordination import Coordination


def open_coordination(url: str, clock: Clock) -> Coordination:
    if url.startswith("etcd://"):
        return EtcdCoordination(url)
    if url.rstrip("/") == "local:":
        return LocalCoordination(clock)
    raise InvalidInput(f"coordination url {url!r}: use etcd://host:port,... or local://")
