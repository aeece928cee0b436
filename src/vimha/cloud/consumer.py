"""A small, fast notification consumer: the other end of SOL 013 subscriptions.

    python -m vimha.cloud.consumer --port 9000 --out received.jsonl [--user U --password P]
        [--oauth-client C --oauth-secret S] [--fail-every N]

Answers the subscription test (GET) with 204, records each POSTed notification as one JSON
line {"t": receive time, "n": notification} *before* acknowledging it with 204, so what a
sender saw acknowledged is on disk even if this process is killed. Serves an OAuth 2.0 token
endpoint at POST /token when --oauth-client is given. HTTP/1.1 with keep-alive; asyncio only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import secrets
import signal
import subprocess
import sys
import time
from typing import IO

STATUS = {
    200: b"OK",
    204: b"No Content",
    400: b"Bad Request",
    401: b"Unauthorized",
    404: b"Not Found",
    500: b"Internal Server Error",
}


class Consumer:
    def __init__(
        self,
        out: IO[str],
        user: str | None,
        password: str | None,
        oauth_client: str | None,
        oauth_secret: str | None,
        fail_every: int,
    ) -> None:
        self.out = out
        self.basic = (
            "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode() if user else None
        )
        self.oauth_client = oauth_client
        self.oauth_basic = (
            "Basic " + base64.b64encode(f"{oauth_client}:{oauth_secret}".encode()).decode()
            if oauth_client
            else None
        )
        self.tokens: set[str] = set()
        self.fail_every = fail_every
        self.count = 0

    def authorised(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "")
        if self.basic is not None:
            return given == self.basic
        if self.oauth_client is not None:
            return given.startswith("Bearer ") and given[7:] in self.tokens
        return True

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        if method == "POST" and path == "/token" and self.oauth_client:
            if headers.get("authorization") != self.oauth_basic:
                return 401, b""
            token = secrets.token_hex(16)
            self.tokens.add(token)
            return 200, json.dumps(
                {"access_token": token, "token_type": "bearer", "expires_in": 3600}
            ).encode()
        if not self.authorised(headers):
            return 401, b""
        if method == "GET":
            return 204, b""
        if method != "POST":
            return 404, b""
        self.count += 1
        if self.fail_every and self.count % self.fail_every == 0:
            return 500, b""
        text = body.decode("utf-8", "replace")
        if not text.startswith("{") or not text.rstrip().endswith("}"):
            return 400, b""
        # The body is spliced in as it came (no parse and re-serialise: this consumer also
        # serves the benchmarks, where its CPU competes with the controller's).
        self.out.write(f'{{"t":{time.time():.6f},"path":{json.dumps(path)},"n":{text}}}\n')
        self.out.flush()
        return 204, b""

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, payload = self.handle(method, path, headers, body)
                extra = b"content-type: application/json\r\n" if payload else b""
                writer.write(
                    b"HTTP/1.1 %d %s\r\ncontent-length: %d\r\n%s\r\n"
                    % (status, STATUS[status], len(payload), extra)
                    + payload
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def main_async(args: argparse.Namespace, out: IO[str]) -> None:
    consumer = Consumer(
        out, args.user, args.password, args.oauth_client, args.oauth_secret, args.fail_every
    )
    server = await asyncio.start_server(
        consumer.serve_client, args.host, args.port, reuse_address=True
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"consumer listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
    with contextlib.suppress(Exception):
        out.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", help="JSON-lines file (default: stdout)")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--oauth-client")
    parser.add_argument("--oauth-secret")
    parser.add_argument(
        "--fail-every", type=int, default=0, help="answer 500 to every Nth notification"
    )
    args = parser.parse_args()
    out = open(args.out, "a") if args.out else sys.stdout  # noqa: SIM115
    asyncio.run(main_async(args, out))


def spawn(port: int, out: str, *extra: str, timeout: float = 15.0) -> subprocess.Popen[bytes]:
    """Start this consumer as a process and wait until it accepts connections."""
    from vimha.cloud.procs import spawn_module

    return spawn_module("vimha.cloud.consumer", port, "--out", out, *extra, timeout=timeout)


if __name__ == "__main__":
    main()
