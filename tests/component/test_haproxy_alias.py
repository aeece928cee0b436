"""The admin-socket aliases of the balancer (agent/balancer.py): a deep run dir's HAProxy
socket lives under the temp dir; those nobody listens on any more are swept at the next
start (an HAProxy killed with its agent leaves its socket behind)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import require_system
from vimha.agent.balancer import MAX_SOCKET_PATH, socket_path, sweep_dead_aliases


def bound(path: Path, listening: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    if listening:
        s.listen()
    return s


def test_dead_aliases_are_swept_live_and_young_ones_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    alias = socket_path(tmp_path / ("deep" * 30) / "haproxy-g.sock")
    assert alias.parent == tmp_path and alias.name.startswith("vimha-")
    dead, live, young = (tmp_path / f"vimha-{n}.sock" for n in ("dead", "live", "young"))
    bound(dead, listening=False).close()  # what a killed HAProxy leaves: nobody listens
    listener = bound(live, listening=True)
    bound(young, listening=False).close()
    other = tmp_path / "vimha-file.sock"
    other.write_text("not a socket")
    try:
        hour_ago = os.path.getmtime(dead) - 3600
        for path in (dead, live, other):
            os.utime(path, (hour_ago, hour_ago), follow_symlinks=False)
        assert sweep_dead_aliases() == 1
        assert not dead.exists()
        assert live.exists() and young.exists() and other.exists()
    finally:
        listener.close()


def test_haproxy_takes_the_longest_socket_path_not_aliased(tmp_path: Path) -> None:
    """98 bytes made HAProxy exit at start ("too long (max 97)"): a pytest temp dir one digit
    longer broke every balancer of a cloud."""
    require_system(shutil.which("haproxy") is not None, "haproxy (apt: haproxy)")
    base = str(tmp_path / "d")
    for length in (MAX_SOCKET_PATH, MAX_SOCKET_PATH + 1):
        wanted = Path(base + "x" * (length - len(base) - len("/h.sock")) + "/h.sock")
        assert len(str(wanted)) == length
        got = socket_path(wanted)
        assert (got == wanted) == (length <= MAX_SOCKET_PATH)
        cfg = tmp_path / "h.cfg"
        cfg.write_text(f"global\n    stats socket {got} mode 600 level admin\n")
        check = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
