"""The agent's service status sent to the controller (agent/status.py) through a real HTTP
server: a controller that is away (a balancer's 503 page while the database switches over)
is said once, not at every retry, and its return is said; a refusal says the ProblemDetails'
detail, not a page of HTML."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vimha.agent import status
from vimha.agent.status import StatusBoard

ANSWERS: list[tuple[int, str, str]] = []  # what the server answers next: code, type, body
TAKEN: list[dict[str, object]] = []


class Controller(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        code, kind, text = ANSWERS.pop(0) if ANSWERS else (204, "", "")
        if code < 300:
            TAKEN.append(json.loads(body))
        self.send_response(code)
        if text:
            self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def controller() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Controller)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ANSWERS.clear()
    TAKEN.clear()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


async def send_until_taken(board: StatusBoard, taken: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(board.run(stop))
    board.update("svc", {"name": "svc", "status": "running"})
    board.changed.set()
    async with asyncio.timeout(20):
        while len(TAKEN) < taken or ANSWERS:
            await asyncio.sleep(0.05)
    stop.set()
    board.changed.set()
    await task


def test_a_controller_away_is_said_once_and_its_return_too(
    controller: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "RETRY", 0.05)
    page = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available</body></html>"
    ANSWERS.extend([(503, "text/html", page)] * 5)
    board = StatusBoard(controller, "token", "cmp-1", refresh=0.1)
    with caplog.at_level(logging.WARNING, "vimha.agent.status"):
        asyncio.run(send_until_taken(board, 1))
    said = [r.getMessage() for r in caplog.records]
    assert said == [
        "controller unavailable (503 Service Unavailable); status sent again soon",
        "service status taken by the controller again",
    ]
    assert TAKEN[0]["services"] == [{"name": "svc", "status": "running"}]


def test_a_refusal_says_the_problem_detail(
    controller: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(status, "RETRY", 0.05)
    problem = json.dumps({"status": 422, "detail": "services[0].status: not a status"})
    ANSWERS.append((422, "application/problem+json", problem))
    board = StatusBoard(controller, "token", "cmp-1", refresh=0.1)
    with caplog.at_level(logging.WARNING, "vimha.agent.status"):
        asyncio.run(send_until_taken(board, 1))
    assert [r.getMessage() for r in caplog.records] == [
        "controller refused the service status: 422: services[0].status: not a status"
    ]
