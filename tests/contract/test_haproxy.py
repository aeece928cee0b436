"""The HAProxy driver against a real HAProxy: its rendered configuration starts, servers are
added and switched through the runtime API without a reload, and traffic follows."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, require_system
from vimha.domain.balancing import Server, commands
from vimha.drivers.haproxy import Frontend, HaproxyAdmin, render


async def serve(port: int, body: bytes) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", port)


@pytest.fixture
async def haproxy(tmp_path: Path) -> AsyncIterator[tuple[HaproxyAdmin, Frontend]]:
    require_system(shutil.which("haproxy") is not None, "haproxy (apt: haproxy)")
    front = Frontend("web", f"127.0.0.1:{free_port()}", mode="http", check="http", inter_ms=100)
    sock = tmp_path / "haproxy.sock"
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render([front], sock))
    proc = subprocess.Popen(["haproxy", "-f", str(cfg), "-db"], stderr=subprocess.DEVNULL)  # noqa: ASYNC220
    admin = HaproxyAdmin(sock)
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        yield admin, front
    finally:
        proc.kill()
        proc.wait()


async def test_backends_follow_the_group_without_a_reload(
    haproxy: tuple[HaproxyAdmin, Frontend],
) -> None:
    admin, front = haproxy
    p1, p2 = free_port(), free_port()
    s1, s2 = await serve(p1, b"one"), await serve(p2, b"two")
    url = f"http://{front.bind}/"
    try:
        assert await admin.servers(front.backend) == {}
        want = {"m1": Server(f"127.0.0.1:{p1}", True), "m2": Server(f"127.0.0.1:{p2}", False)}
        for cmd in commands(front.backend, {}, want, front.server_options()):
            await admin.run(cmd)
        have = await admin.servers(front.backend)
        assert {n: c.ready for n, c in have.items()} == {"m1": True, "m2": False}
        assert have["m1"].address == f"127.0.0.1:{p1}"
        async with httpx.AsyncClient(timeout=2) as client:
            assert {(await client.get(url)).text for _ in range(6)} == {"one"}
            # switch over: m1 out, m2 in, as the active-standby plan orders it
            want = {"m1": Server(f"127.0.0.1:{p1}", False), "m2": Server(f"127.0.0.1:{p2}", True)}
            for cmd in commands(front.backend, have, want, front.server_options()):
                await admin.run(cmd)
            assert {(await client.get(url)).text for _ in range(6)} == {"two"}
            # all-active, then one member dies: requests are retried on the other one
            want = {"m1": Server(f"127.0.0.1:{p1}", True), "m2": Server(f"127.0.0.1:{p2}", True)}
            have = await admin.servers(front.backend)
            for cmd in commands(front.backend, have, want, front.server_options()):
                await admin.run(cmd)
            s1.close()
            await s1.wait_closed()
            answers = [(await client.get(url)) for _ in range(20)]
            assert {r.status_code for r in answers} == {200} and {r.text for r in answers} == {
                "two"
            }
    finally:
        s2.close()


async def test_a_request_in_flight_outlives_its_server_being_marked_down(
    haproxy: tuple[HaproxyAdmin, Frontend],
) -> None:
    """http: the server that hangs fails its checks while a client's request waits on it; the
    request is not cut when the server is marked down (it would fail the client), it is
    answered (here: late, by the hung server itself)."""
    admin, front = haproxy
    port, hung = free_port(), asyncio.Event()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if hung.is_set():
            await asyncio.sleep(1.5)  # the checks (timeout 200 ms) fail meanwhile
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nlate")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", port)
    try:
        want = {"m1": Server(f"127.0.0.1:{port}", True)}
        for cmd in commands(front.backend, {}, want, front.server_options(), shutdown=False):
            await admin.run(cmd)
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"http://{front.bind}/")).status_code == 200
            hung.set()
            reply = await client.get(f"http://{front.bind}/")
        assert reply.status_code == 200 and reply.text == "late"
        state = await admin.run(f"show servers state {front.backend}")
        rows = [f for f in map(str.split, state.splitlines()) if len(f) >= 19 and f[0].isdigit()]
        assert rows[0][5] == "0"  # srv_op_state: it was marked down meanwhile
    finally:
        server.close()


def test_connect_and_check_timeouts_are_set_apart() -> None:
    """The connect timeout is short (it is also the pause before a retry on a backend with a
    single ready server); a health check may take longer to answer."""
    text = render([Frontend("kv", "127.0.0.1:1")], Path("/tmp/x.sock"), 50, 200)
    assert "timeout connect 50ms" in text and "timeout check 200ms" in text
