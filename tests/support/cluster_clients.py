"""Steady clients of the cluster groups (issue 5), shared by their system tests and
`bench/cluster_switchover.py`: a thread that writes numbered items through the load
balancer without pause, reconnecting on failure, and keeps what was acknowledged, when.

- `MysqlWriter`: INSERTs into a MariaDB table (autocommit: acknowledged = committed), the
  Galera cluster's or the primary's;
- `RabbitPublisher`: publishes to a quorum queue with publisher confirms (acknowledged =
  confirmed by the broker); `drained()` consumes what the queue holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pymysql

from tests.support.agent_group import until
from vimha.drivers.haproxy import HaproxyAdmin

QUEUE = "vimha-test"


class SteadyClient:
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, address: str) -> None:
        self.address = address
        self.acked: list[int] = []
        self.acked_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.next = 1
        self.conn: Any = None

    def connect(self) -> None:
        raise NotImplementedError

    def send(self, i: int) -> None:
        raise NotImplementedError

    def _drop(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None

    def _run(self) -> None:
        while not self.stopping.is_set():
            i = self.next
            self.next += 1
            try:
                if self.conn is None:
                    self.connect()
                self.send(i)
                self.acked.append(i)
                self.acked_at.append(time.monotonic())
            except self.errors:
                self.failures += 1
                self._drop()
                time.sleep(0.05)
        self._drop()

    def __enter__(self) -> SteadyClient:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(15)

    def more(self, n: int, timeout: float = 120) -> None:
        target = len(self.acked) + n
        until(lambda: len(self.acked) >= target, timeout)

    def resumed_after(self, fault_at: float, window: float = 60) -> tuple[float, float]:
        """(fault -> the end of the longest stall of acknowledgements after it, that stall),
        in seconds: how long the fault kept writes from succeeding."""
        times = [fault_at] + [t for t in self.acked_at if fault_at < t <= fault_at + window]
        if len(times) < 2:
            raise RuntimeError("no acknowledgement after the fault")
        gaps = [(b - a, b) for a, b in itertools.pairwise(times)]
        stall, end = max(gaps)
        return end - fault_at, stall


def stalls(
    acked_at: list[float], fault_at: float, least: float = 0.15, window: float = 60
) -> list[tuple[float, float]]:
    """Every pause of acknowledgements after the fault at least `least` long, as (its start
    after the fault, its length), in seconds: where a round's time went."""
    times = [fault_at] + [t for t in acked_at if fault_at < t <= fault_at + window]
    return [(a - fault_at, b - a) for a, b in itertools.pairwise(times) if b - a >= least]


def mysql(address: str, timeout: float = 2) -> Any:
    host, _, port = address.rpartition(":")
    return pymysql.connect(
        host=host, port=int(port), user="vimha", autocommit=True, connect_timeout=timeout,
        read_timeout=timeout, write_timeout=timeout,
    )  # fmt: skip


def mysql_query(address: str, sql: str) -> list[Any]:
    conn = mysql(address)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()


def stored_ids(address: str, table: str = "app.t") -> set[int]:
    """The ids in `table` as of everything the server's cluster had committed when asked.
    A Galera member applies what the cluster certified in the background and can be behind
    what another member acknowledged (its applier catching up after a rejoin): the read
    waits for it first (`wsrep_sync_wait = 1`, a causal read). Harmless without Galera."""
    conn = mysql(address, timeout=60)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute(f"SELECT id FROM {table}")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


class MysqlWriter(SteadyClient):
    errors = (pymysql.MySQLError,)

    def __init__(self, address: str) -> None:
        super().__init__(address)
        mysql_query(address, "CREATE DATABASE IF NOT EXISTS app")
        mysql_query(address, "CREATE TABLE IF NOT EXISTS app.t (id INT PRIMARY KEY)")

    def connect(self) -> None:
        self.conn = mysql(self.address)

    def send(self, i: int) -> None:
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO app.t VALUES (%s)", (i,))


def amqp(address: str) -> pika.BlockingConnection:
    host, _, port = address.rpartition(":")
    params = pika.ConnectionParameters(
        host=host, port=int(port), socket_timeout=2, blocked_connection_timeout=5,
        connection_attempts=1, heartbeat=5,
    )  # fmt: skip
    return pika.BlockingConnection(params)


class RabbitPublisher(SteadyClient):
    errors = (pika.exceptions.AMQPError, OSError)

    def connect(self) -> None:
        self.conn = amqp(self.address)
        self.channel = self.conn.channel()
        self.channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        self.channel.confirm_delivery()

    def send(self, i: int) -> None:
        self.channel.basic_publish(
            "", QUEUE, str(i).encode(), pika.BasicProperties(delivery_mode=2), mandatory=True
        )


def busy_member(admin_socket: Path, backend: str) -> str:
    """The server of an HAProxy backend that holds a session now (the client's member)."""
    stat = asyncio.run(HaproxyAdmin(admin_socket).run("show stat"))
    for line in stat.splitlines():
        fields = line.split(",")
        # scur (the 5th field): the server's current sessions
        if len(fields) > 4 and fields[0] == backend and fields[1] != "BACKEND" and fields[4] != "0":
            return fields[1]
    raise RuntimeError(f"no server of {backend} has a session")


def drained(address: str) -> set[int]:
    """Every message in the queue, consumed."""
    conn = amqp(address)
    try:
        channel = conn.channel()
        got: set[int] = set()
        while True:
            method, _, body = channel.basic_get(QUEUE, auto_ack=True)
            if method is None:
                return got
            got.add(int(body))
    finally:
        conn.close()
