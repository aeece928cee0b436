"""What moved among the compute hosts since a reader's known generations (issue 15): a
scheduler keeps its snapshot between units of work and reads, each time, the hosts'
generations (two narrow columns) and the rows and SAL usage of only the hosts whose
generation moved, instead of every host row and every instance's spec."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy import select
from sqlalchemy.engine import Connection

from vimha.drivers.sqlstore.compute_rows import host_of, sal_usage_of
from vimha.drivers.sqlstore.compute_tables import compute_hosts
from vimha.ports.compute import HostChanges


def host_changes(
    conn: Connection, known: Mapping[str, int], usage: bool, own: Collection[str]
) -> HostChanges:
    """`own`: the hosts this transaction has written (always read again: its view of them
    is not committed)."""
    h = compute_hosts.c
    if not known:
        rows = conn.execute(select(compute_hosts)).mappings().all()
        hosts = {r["host"]: host_of(r) for r in rows}
        gone: frozenset[str] = frozenset()
        whole = True
    else:
        generations = dict(conn.execute(select(h.host, h.generation)).tuples().all())
        wanted = [n for n, g in generations.items() if known.get(n) != g or n in own]
        gone = frozenset(known.keys() - generations.keys())
        hosts = {}
        if wanted:
            stmt = select(compute_hosts).where(h.host.in_(wanted))
            hosts = {r["host"]: host_of(r) for r in conn.execute(stmt).mappings().all()}
        whole = False
    sal = {}
    if usage and hosts:
        sal = sal_usage_of(conn, None if whole else list(hosts))
    return HostChanges(hosts, gone, sal, frozenset(own) & hosts.keys())
