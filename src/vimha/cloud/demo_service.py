"""A stand-in for one of the VIM's services in the embedded cloud: an HTTP server that answers
GET / with 200 and can be told to crash (POST /crash) or hang (POST /hang: every request then
blocks, like a deadlocked service). `--node` and `--service` only label the process, so that
`vimha chaos` can find it.

    python -m vimha.cloud.demo_service --port 9101 --node cmp-1 --service nova-compute
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vimha.cloud.parent import watch_parent

HUNG = threading.Event()
ROLE_FILE: Path | None = None


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the services it stands for do: its agent checks it every 100 ms, and a
    # new connection per check was a third of the check's cost (issue 22, py-spy).
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        while HUNG.is_set():
            time.sleep(3600)
        if ROLE_FILE is not None:  # a member of a service group: say which role it has
            try:
                role = ROLE_FILE.read_text().strip() or "standby"
            except OSError:
                role = "standby"
            self._reply(200, f"ok {role}\n".encode())
            return
        self._reply(200, b"ok\n")

    def do_POST(self) -> None:
        if self.path == "/crash":
            self._reply(202)
            os._exit(1)
        if self.path == "/hang":
            HUNG.set()
            self._reply(202)
            return
        self._reply(404)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--node", default="")
    parser.add_argument("--service", default="")
    parser.add_argument("--role-file", help="The role its agent writes (service groups)")
    args = parser.parse_args()
    global ROLE_FILE
    ROLE_FILE = Path(args.role_file) if args.role_file else None
    watch_parent(lambda: os._exit(0))
    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
