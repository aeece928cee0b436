"""A RabbitMQ cluster of three run by real agents (issue 5, ARCH-5: the `rabbitmq` handler),
each in a network namespace of its own, with an HAProxy agent in front (AMQP to every member)
and a controller raising the group's alarms. A publisher sends to a quorum queue through the
balancer with publisher confirms all along. Faults are real: a member killed (-9), a member
frozen (SIGSTOP), a member cut off (its link goes down in its namespace: it pauses, as the
minority), a member's data wiped. Every confirmed message is in the queue at the end, and
every member is back in the cluster."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika  # type: ignore[import-untyped]
import pika.exceptions  # type: ignore[import-untyped]
import pytest

from tests.conftest import require_system
from tests.support.agent_group import ClusterHarness, until
from tests.support.cluster_clients import QUEUE, RabbitPublisher, amqp, drained

NODES = ("mq-1", "mq-2", "mq-3")
BIN = Path("/usr/lib/rabbitmq/bin")


def serves_alone(address: str) -> str | None:
    """What a client connecting straight to a member finds, when it is not the cluster's
    queue: the member is up but has not joined (None: refused, or the cluster's queue)."""
    try:
        conn = amqp(address)
    except (pika.exceptions.AMQPError, OSError):
        return None  # not accepting clients
    try:
        conn.channel().queue_declare(QUEUE, passive=True)
        return None
    except pika.exceptions.ChannelClosedByBroker as exc:
        return f"a member without the cluster's queue accepted a client: {exc}"
    except (pika.exceptions.AMQPError, OSError):
        return None
    finally:
        with contextlib.suppress(Exception):
            conn.close()


def handler(port: int) -> dict[str, Any]:
    return {"type": "rabbitmq", "port": port, "cookie": "vimhatestcookie0123456789"}


@pytest.fixture
def cluster() -> Iterator[ClusterHarness]:
    require_system((BIN / "rabbitmq-server").exists(), "RabbitMQ (apt: rabbitmq-server)")
    require_system(shutil.which("haproxy") is not None, "haproxy (apt: haproxy)")
    require_system(os.geteuid() == 0, "root (each member in a network namespace)")
    g = ClusterHarness(
        Path(tempfile.mkdtemp(prefix="vimha-mq-")),
        NODES,
        handler=handler,
        name="mq",
        policy={"policy": "n-plus-m", "mode": "cluster"},
        frontends=[{"group": "mq", "inter": 0.2}],
    )
    with g.running():
        yield g


def test_members_killed_frozen_cut_off_and_wiped_no_confirmed_message_lost(
    cluster: ClusterHarness,
) -> None:
    g = cluster
    lb = g.lb["mq"]
    with RabbitPublisher(lb) as p:
        p.more(50)
        began = {"kill": p.next}  # the first id published in each phase
        killed = g.members()[NODES[0]]
        os.kill(int(killed["pid"]), signal.SIGKILL)
        p.more(50)
        until(lambda: g.healthy() == list(NODES), 120)  # restarted, rejoined

        began["stop"] = p.next
        frozen = g.members()[NODES[1]]
        os.kill(int(frozen["pid"]), signal.SIGSTOP)
        p.more(50)
        until(lambda: g.healthy() == list(NODES), 120)  # the hung one killed and restarted

        began["cut"] = p.next
        cut = NODES[2]
        broker = g.members()[cut]["pid"]
        g.link(cut, up=False)
        until(lambda: cut not in g.healthy(), 60)
        until(
            lambda: (
                {"SERVICE_GROUP_PARTITIONED", "SERVICE_GROUP_REDUNDANCY_LOST"} <= set(g.alarms())
            ),
            60,
            lambda: (g.alarms(), g.members()),
        )
        until(
            lambda: g.members()[cut]["detail"].startswith("paused"),
            30,
            lambda: g.members()[cut],
        )
        assert g.members()[cut]["pid"] == broker  # a paused broker is left alone
        p.more(50)  # the majority goes on
        g.link(cut, up=True)
        until(lambda: g.healthy() == list(NODES), 120)  # resumed by itself

        began["wipe"] = p.next
        wiped = NODES[0]
        g.procs[wiped].kill()  # the node goes, its broker with it; its disk is replaced
        g.procs[wiped].wait()
        until(lambda: wiped not in g.members(), 30)  # its agent's lease ran out
        shutil.rmtree(g.base / wiped / "run" / "rabbitmq-mq")
        p.more(50)
        g.start(wiped)
        address = f"{g.hosts[wiped]}:{g.ports[wiped]}"
        alone: list[str] = []  # what a client found at the member's own address meanwhile

        def rejoined() -> bool:
            if (found := serves_alone(address)) is not None:
                alone.append(found)
            return g.healthy() == list(NODES)

        until(rejoined, 180)  # joined again from nothing
        # before it joined, it ran as a cluster of one: a client it had accepted then would
        # have seen its publishes confirmed, and lost when it joined
        assert not alone, f"{len(alone)} times: {alone[0]}"
        p.more(20)
    until(lambda: not g.alarms(), 60)
    got = drained(lb)
    lost = sorted(set(p.acked) - got)
    assert not lost, (
        f"confirmed messages lost: {len(lost)} of {len(p.acked)}, {lost[:10]} .. {lost[-3:]}; "
        f"the phases began at ids {began}; logs kept in {g.keep_logs()}"
    )
