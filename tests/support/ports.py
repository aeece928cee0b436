"""Free ports for the tests' servers, below the ephemeral range (32768+): a port found free
there can be taken by any outgoing connection before the server binds it (an etcd member
then never starts). Each pytest-xdist worker, or pytest process run beside another, draws
from a share of its own, and a port is never handed out twice in one process."""

from __future__ import annotations

import os
import random
import socket

LOW, HIGH = 20000, 32000
_given: set[int] = set()


def share() -> tuple[int, int]:
    """This process's share of [LOW, HIGH): one per pytest-xdist worker, or the one that
    VIMHA_TEST_PORT_SHARE ("index/count") names for pytest processes run side by side
    (scripts/run-tests.sh); the whole range otherwise."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    if not worker and (side := os.environ.get("VIMHA_TEST_PORT_SHARE", "")):
        first, _, total = side.partition("/")
        index, count = int(first), int(total)
    width = (HIGH - LOW) // max(count, 1)
    low = LOW + (index % max(count, 1)) * width
    return low, low + width


def bindable(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    low, high = share()
    for _ in range(500):
        port = random.randrange(low, high)
        if port not in _given and bindable(port):
            _given.add(port)
            return port
    raise RuntimeError(f"no free port in {low}..{high}")
