"""What the store keeps about the cloud besides alarms: fence records, the hosts and
services declared through the API, and settings changed at run time."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy import update as sql_update

from vimha.domain.errors import Conflict, NotFound, Temporary
from vimha.drivers.sqlstore.base import SqlBase, utc
from vimha.drivers.sqlstore.tables import fence_records, hosts, services, settings
from vimha.ports.store import FenceRecord


class Inventory(SqlBase):
    """Fence records, declared hosts and services, settings."""

    # -- fencing ------------------------------------------------------------------------
    def add_fence_record(self, record: FenceRecord) -> FenceRecord:
        with self._write() as conn:
            seq = conn.execute(
                insert(fence_records)
                .values(
                    host=record.host,
                    failure_kind=record.failure_kind,
                    started_at=self._w(record.started_at),
                    finished_at=self._w(record.finished_at),
                    result=record.result,
                    detail=record.detail,
                )
                .returning(fence_records.c.seq)
            ).scalar_one()
        return dataclasses.replace(record, seq=int(seq))

    def fence_records(self, host: str | None = None, limit: int = 100) -> list[FenceRecord]:
        query = select(fence_records).order_by(fence_records.c.seq.desc()).limit(limit)
        if host is not None:
            query = query.where(fence_records.c.host == host)
        with self._read() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            FenceRecord(
                host=r["host"],
                failure_kind=r["failure_kind"],
                started_at=utc(r["started_at"]),
                finished_at=utc(r["finished_at"]),
                result=r["result"],
                detail=r["detail"],
                seq=r["seq"],
            )
            for r in rows
        ]

    # -- hosts declared through the API -----------------------------------------------------
    def add_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    insert(hosts).values(
                        name=name, spec=spec, created_at=self._w(now), updated_at=self._w(now)
                    )
                )
        except Temporary:  # the primary key: a host of that name exists
            raise Conflict(f"host {name} already exists") from None

    def replace_host(self, name: str, spec: dict[str, Any], now: datetime) -> None:
        with self._write() as conn:
            done = conn.execute(
                sql_update(hosts)
                .where(hosts.c.name == name)
                .values(spec=spec, updated_at=self._w(now))
            ).rowcount
        if not done:
            raise NotFound(f"host {name} not found")

    def delete_host(self, name: str) -> None:
        with self._write() as conn:
            done = conn.execute(delete(hosts).where(hosts.c.name == name)).rowcount
        if not done:
            raise NotFound(f"host {name} not found")

    def list_hosts(self) -> dict[str, dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(select(hosts.c.name, hosts.c.spec).order_by(hosts.c.name)).all()
        return {name: dict(spec) for name, spec in rows}

    # -- services declared through the API --------------------------------------------------
    def add_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    insert(services).values(
                        host=host,
                        name=name,
                        spec=spec,
                        created_at=self._w(now),
                        updated_at=self._w(now),
                    )
                )
        except Temporary:  # the primary key
            raise Conflict(f"service {name} of host {host} already exists") from None

    def replace_service(self, host: str, name: str, spec: dict[str, Any], now: datetime) -> None:
        mine = and_(services.c.host == host, services.c.name == name)
        with self._write() as conn:
            done = conn.execute(
                sql_update(services).where(mine).values(spec=spec, updated_at=self._w(now))
            ).rowcount
        if not done:
            raise NotFound(f"service {name} of host {host} not found")

    def delete_service(self, host: str, name: str) -> None:
        mine = and_(services.c.host == host, services.c.name == name)
        with self._write() as conn:
            done = conn.execute(delete(services).where(mine)).rowcount
        if not done:
            raise NotFound(f"service {name} of host {host} not found")

    def list_services(self, host: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
        query = select(services.c.host, services.c.name, services.c.spec).order_by(
            services.c.host, services.c.name
        )
        if host is not None:
            query = query.where(services.c.host == host)
        with self._read() as conn:
            return [(h, n, dict(spec)) for h, n, spec in conn.execute(query).all()]

    # -- settings -----------------------------------------------------------------------
    def get_setting(self, key: str) -> Any | None:
        with self._read() as conn:
            return conn.execute(select(settings.c.value).where(settings.c.key == key)).scalar()

    def put_setting(self, key: str, value: Any) -> None:
        with self._write() as conn:
            conn.execute(delete(settings).where(settings.c.key == key))
            conn.execute(insert(settings).values(key=key, value=value))
