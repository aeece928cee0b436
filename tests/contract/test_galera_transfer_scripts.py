"""A Galera donor is left alone while its state transfer script runs, and restarted when it
stays desynced with none (Galera leaves a donor so when a partition cut its transfer): the
script is found among the processes of the server's session (issue 22, CI run of stop 24)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vimha.agent.galera_handler import transferring


@pytest.fixture
def server(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A stand-in server: a session leader that runs a `wsrep_sst_rsync` for a while."""
    script = tmp_path / "wsrep_sst_rsync"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", script)
    proc = subprocess.Popen(["sh", "-c", f"{script} 1.5; sleep 30"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_a_transfer_script_of_the_servers_session_is_seen_until_it_ends(
    server: subprocess.Popen[bytes],
) -> None:
    deadline = time.monotonic() + 1.0
    while not transferring(server.pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert transferring(server.pid)
    time.sleep(1.8)
    assert not transferring(server.pid)  # the script ended; the server runs on


def test_another_sessions_script_is_not_this_servers(server: subprocess.Popen[bytes]) -> None:
    time.sleep(0.2)
    assert not transferring(1)
    assert not transferring(0)
