"""The coordination backend for a URL: `etcd://host:port,...`, `local://` (in this process)
or `local:///path/coord.db` (shared by the processes of one host)."""

from __future__ import annotations

from pathlib import Path

from vimha.domain.clock import Clock
from vimha.domain.errors import InvalidInput
from vimha.drivers.coord_etcd import EtcdCoordination
from vimha.drivers.coord_file import FileCoordination
from vimha.drivers.coord_local import LocalCoordination
from vimha.ports.coordination import Coordination


def open_coordination(url: str, clock: Clock) -> Coordination:
    if url.startswith("etcd://"):
        return EtcdCoordination(url)
    if url.rstrip("/") == "local:":
        return LocalCoordination(clock)
    if url.startswith("local:///"):
        return FileCoordination(Path(url.removeprefix("local://")))
    raise InvalidInput(
        f"coordination url {url!r}: use etcd://host:port,..., local:// or local:///path/file.db"
    )
