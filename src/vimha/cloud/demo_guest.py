"""The demo guest of the process driver (issue 14): what runs "inside" an instance.

Started by the node's agent from the instance's fresh disk (this file, unpacked from the
demo image), with its config drive in $VIMHA_CONFIG_DRIVE, its virtual NICs in $VIMHA_NICS
("mac,ip,network;..."), its incarnation in $VIMHA_INCARNATION and its watchdog device in
$VIMHA_WATCHDOG. It behaves as the QEMU demo guest does:

- answers GET http://<each NIC's IP>:8080/ with JSON: instance, name, vnf, port (the
  network), incarnation, digest (of its initial state: see domain/configdrive.py);
- pets its watchdog every second;
- POST /chaos/crash (dies by SIGSEGV), /chaos/hang (stops answering and petting),
  /chaos/stop-watchdog (keeps answering, stops petting);
- its console (stdin/stdout) answers the commands status, crash, hang, stop-watchdog.

Light on purpose: 50 of them boot on a node at once (issue 14), so its start is the
interpreter's and little more (about 20 ms of CPU instead of 45): started with -S -I, the
standard library only, one thread, a poll loop, and the C modules under the standard
library's wrappers (`_socket`, `_json`, `_signal`, `select`, a SHA-256): `socket`, `signal`
and `json` import enum and re, which cost more than everything else it does at boot.
"""

import _json
import _signal  # type: ignore[import-not-found]  # no stub; signal imports enum
import _socket
import os
import sys
import time
from select import POLLIN, poll

try:  # CPython's own SHA-256, lighter to load than OpenSSL's (hashlib)
    from _sha256 import sha256  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Python 3.12 renamed it (_sha2): hashlib's then
    from hashlib import sha256

PORT = int(os.environ.get("VIMHA_GUEST_PORT", "8080"))


class _Decoding:
    """What `_json.make_scanner` reads of its context: json.JSONDecoder's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    array_hook = None
    parse_float = float
    parse_int = int
    parse_constant = None
    memo = None


_scan = _json.make_scanner(_Decoding())  # type: ignore[arg-type]


def loads(text: str) -> object:
    """One JSON document (json.loads without importing json)."""
    start = len(text) - len(text.lstrip())
    value, end = _scan(text, start)
    if text[end:].strip():
        raise ValueError("extra data after the JSON document")
    return value


def dumps(doc: dict[str, object]) -> str:
    """A flat object of strings, integers and booleans, as json.dumps writes it."""
    items = []
    for key, value in doc.items():
        if isinstance(value, str):
            text = _json.encode_basestring_ascii(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int):
            text = str(value)
        else:
            raise TypeError(f"{key}: {type(value).__name__} is not written here")
        items.append(f"{_json.encode_basestring_ascii(key)}: {text}")
    return "{" + ", ".join(items) + "}"


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def drive_files(root: str) -> dict[str, bytes]:
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def initial_digest(files: dict[str, bytes], nics: list[tuple[str, str, str]]) -> str:
    lines = sorted(f"file {path} {sha256(data).hexdigest()}" for path, data in files.items())
    lines += sorted(f"nic {mac.lower()} {ip}" for mac, ip, _ in nics)
    return str(sha256(("\n".join(lines) + "\n").encode()).hexdigest())


class Guest:
    def __init__(self) -> None:
        self.drive = os.environ.get("VIMHA_CONFIG_DRIVE", "")
        self.nics: list[tuple[str, str, str]] = []
        for item in filter(None, os.environ.get("VIMHA_NICS", "").split(";")):
            mac, ip, network = item.split(",", 2)
            self.nics.append((mac, ip, network))
        self.incarnation = int(os.environ.get("VIMHA_INCARNATION", "1"))
        self.watchdog = os.environ.get("VIMHA_WATCHDOG")
        files: dict[str, bytes] = drive_files(self.drive) if self.drive else {}
        meta = loads(files.get("openstack/latest/meta_data.json", b"{}").decode())
        if not isinstance(meta, dict):
            meta = {}
        extra = meta.get("meta")
        self.identity: dict[str, object] = {
            "instance": meta.get("uuid", ""),
            "name": meta.get("name", ""),
            "vnf": extra.get("vnf", "") if isinstance(extra, dict) else "",
            "incarnation": self.incarnation,
            "digest": initial_digest(files, self.nics),
        }
        self.petting = self.watchdog is not None
        self.poller = poll()
        self.listeners: dict[int, tuple[_socket.socket, str]] = {}
        self.console_fd = -1

    def listen(self) -> None:
        for _, ip, network in self.nics:
            sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            sock.bind((ip, PORT))
            sock.listen(64)
            sock.setblocking(False)
            self.listeners[sock.fileno()] = (sock, network)
            self.poller.register(sock.fileno(), POLLIN)
        if sys.stdin is not None and not sys.stdin.closed:
            self.console_fd = sys.stdin.fileno()
            self.poller.register(self.console_fd, POLLIN)

    def pet(self) -> None:
        if self.petting and self.watchdog:
            with open(self.watchdog, "ab") as fh:
                fh.write(b".")
                fh.truncate(0)

    def accept(self, sock: _socket.socket, network: str) -> None:
        try:
            fd, _ = sock._accept()  # type: ignore[attr-defined]  # what socket.accept wraps
        except OSError:
            return
        self.answer(_socket.socket(fileno=fd), network)

    def answer(self, conn: _socket.socket, network: str) -> None:
        conn.settimeout(2)
        try:
            request = b""
            while b"\r\n\r\n" not in request and len(request) < 8192:
                piece = conn.recv(4096)
                if not piece:
                    break
                request += piece
            line = request.split(b"\r\n", 1)[0].decode("latin-1").split()
            method, path = (line[0], line[1]) if len(line) >= 2 else ("GET", "/")
            after: str | None = None
            if path.startswith("/chaos/") and method in ("POST", "GET"):
                after = path[len("/chaos/") :]
                body: dict[str, object] = {"chaos": after}
            else:
                body = dict(self.identity, port=network)
            data = dumps(body).encode()
            conn.sendall(
                b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(data)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + data
            )
        except OSError:
            return
        finally:
            conn.close()
        if after:
            self.chaos(after)

    def chaos(self, what: str) -> None:
        say("vimha-guest chaos: " + what)
        if what == "crash":
            os.kill(os.getpid(), _signal.SIGSEGV)
        elif what == "hang":
            while True:  # no answer, no pet: as a hung kernel
                time.sleep(3600)
        elif what == "stop-watchdog":
            self.petting = False

    def console(self) -> None:
        line = sys.stdin.readline()
        if not line:
            self.poller.unregister(self.console_fd)
            self.console_fd = -1
            return
        command = line.strip()
        if command in ("crash", "hang", "stop-watchdog"):
            self.chaos(command)
        elif command:
            say(dumps(self.identity))

    def run(self) -> None:
        say(f"vimha-guest {self.identity['name']} incarnation {self.incarnation} booting")
        self.listen()
        say("vimha-guest ready: digest {}".format(self.identity["digest"]))
        next_pet = 0.0
        while True:
            now = time.monotonic()
            if now >= next_pet:
                self.pet()
                next_pet = now + 1.0
            for fd, _ in self.poller.poll(max(0.0, next_pet - now) * 1000):
                if fd == self.console_fd:
                    self.console()
                elif fd in self.listeners:
                    self.accept(*self.listeners[fd])


if __name__ == "__main__":

    def _term(*_: object) -> None:
        say("vimha-guest shutting down")
        sys.exit(0)

    _signal.signal(_signal.SIGTERM, _term)
    Guest().run()
