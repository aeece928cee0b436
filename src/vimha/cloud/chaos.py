"""`vimha chaos`: real faults in the embedded cloud. Processes are found by their command
lines under /proc; plane faults use the agents' drop rule (loopback mode: no root, no real
link to cut; the network-namespace mode, where a link really goes down, comes later)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

from vimha.cloud.nodes import PLANES
from vimha.domain.errors import InvalidInput, Permanent


def load_state(data_dir: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((data_dir / "cloud.json").read_text())
    except (OSError, ValueError):
        raise Permanent(f"no embedded cloud in {data_dir}: start one with `vimha up`") from None
    return state


def node(state: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in state:
        raise InvalidInput(f"unknown node {name!r}; nodes: {', '.join(state)}")
    found: dict[str, Any] = state[name]
    return found


def _processes(*needles: str) -> list[int]:
    """Live processes whose command line holds every needle."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and all(n in cmd for n in needles):
            pids.append(int(entry.name))
    return pids


def _signal(pids: list[int], sig: signal.Signals, what: str) -> str:
    if not pids:
        raise Permanent(f"no running {what} found")
    for pid in pids:
        os.kill(pid, sig)
    return f"{sig.name} -> {what} (pid {', '.join(map(str, pids))})"


def agent_pids(n: dict[str, Any]) -> list[int]:
    return _processes("vimha", "agent", "--config", n["config"])


def service_pids(n: dict[str, Any]) -> list[int]:
    return _processes("vimha.cloud.demo_service", f"--node {n['name']} ")


def kill_agent(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(agent_pids(n), signal.SIGKILL, f"agent of {name}")


def kill_service(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(service_pids(n), signal.SIGKILL, f"{n['service']} on {name}")


def hang_service(data_dir: Path, name: str) -> str:
    n = node(load_state(data_dir), name)
    return _signal(service_pids(n), signal.SIGSTOP, f"{n['service']} on {name}")


def plane_down(data_dir: Path, name: str, plane: str) -> str:
    n = node(load_state(data_dir), name)
    if plane not in PLANES:
        raise InvalidInput(f"unknown plane {plane!r}; planes: {', '.join(PLANES)}")
    (Path(n["control"]) / f"drop-{plane}").touch()
    return f"plane {plane} of {name} is down (the agent drops its heartbeats)"


def heal(data_dir: Path, name: str | None = None) -> str:
    state = load_state(data_dir)
    names = [name] if name else list(state)
    done = []
    for each in names:
        n = node(state, each)
        for drop in Path(n["control"]).glob("drop-*"):
            drop.unlink()
            done.append(f"{each}: {drop.name[5:]} up")
        for pid in service_pids(n) + agent_pids(n):
            os.kill(pid, signal.SIGCONT)
    return "; ".join(done) or "healed (nothing was down; stopped processes continued)"
