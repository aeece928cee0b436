"""A process guest's network namespace (issue 14, `--netns`): its ports as real interfaces.

The guest is started by `unshare --net` behind a gate (`gate_argv`): a shell in the new,
empty namespace that waits for one line on its stdin before it execs the guest. Meanwhile
`plumb` gives the namespace one veth pair per port: the host side, named `tap_name(mac)`,
up in the agent's namespace (and on the port's bridge when that is a Linux bridge; an Open
vSwitch bridge is its switch keeper's to attach, agent/switch.py), the guest side `eth<i>`
with the port's MAC and IP/prefix, `lo` up and a default route through the first gateway.
A port not on a Linux bridge (Open vSwitch's userspace datapath, which reads and writes its
devices' frames as a packet socket does) has its guest side's transmit checksumming off:
left to the device, a TCP segment would cross the switch with its checksum unfinished and be
dropped by its receiver (ICMP, checksummed by the stack, would go through: ping works, HTTP
does not). Then the gate opens. The namespace has no name and no mount: it is the guest's
(/proc/<pid>/ns/net), it goes when the guest ends, and its veth pairs with it (`unplug`
removes a pair at once, where the kernel would take its time).

`open_connection` reaches a guest from the agent: a socket made inside the guest's
namespace (setns(2) on a thread kept for that), then used from the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vimha.domain.addressing import tap_name
from vimha.ports.hypervisor import GuestPort, HypervisorUnavailable

CLONE_NEWNET = 0x40000000
GO = b"go\n"
GATE_FAILED = 75  # the guest's exit status when its network was not set up
TOOLS = ("unshare", "nsenter", "ip")
# The gate's stdin is the pipe; the guest's is its console FIFO, opened read-write so that
# opening it never blocks (there is always a writer: itself), as the driver does otherwise.
GATE = 'c=$1; shift; read -r go && [ "$go" = go ] || exit 75; exec "$@" 0<>"$c"'


def available() -> str | None:
    """None when guests can have namespaces of their own here, else why not."""
    if os.geteuid() != 0:
        return "guest network namespaces need root"
    for tool in TOOLS:
        if shutil.which(tool) is None:
            package = "iproute2" if tool == "ip" else "util-linux"
            return f"`{tool}` is not installed (apt: {package})"
    return None


def gate_argv(console_in: Path, argv: Sequence[str]) -> list[str]:
    """`argv` started in a new network namespace once `GO` is read on stdin."""
    return ["unshare", "--net", "--", "/bin/sh", "-c", GATE, "sh", str(console_in), *argv]


def netns_of(pid: int) -> str:
    return f"/proc/{pid}/ns/net"


def _is_linux_bridge(name: str) -> bool:
    return Path(f"/sys/class/net/{name}/bridge").is_dir()


async def _ip(argv: Sequence[str], batch: str, what: str) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, "-batch", "-", stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(10):
            _, err = await proc.communicate(batch.encode())
    except (OSError, TimeoutError) as exc:
        raise HypervisorUnavailable(f"{what}: {exc}") from None
    if proc.returncode != 0:
        said = err.decode(errors="replace").strip()[-300:]
        raise HypervisorUnavailable(f"{what}: {said or f'ip exited with {proc.returncode}'}")


async def wait_unshared(proc: subprocess.Popen[bytes], within: float = 5.0) -> None:
    """Until the child is in a namespace of its own (unshare has run)."""
    ours = os.readlink("/proc/thread-self/ns/net")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        with contextlib.suppress(OSError):
            if os.readlink(netns_of(proc.pid)) != ours:
                return
        if proc.poll() is not None:
            raise HypervisorUnavailable(f"unshare --net exited with {proc.returncode}")
        if loop.time() > deadline:
            raise HypervisorUnavailable(f"no network namespace of its own within {within:g}s")
        await asyncio.sleep(0.002)


async def plumb(pid: int, ports: Sequence[GuestPort]) -> None:
    """The guest's ports in its namespace, the host sides up (on their Linux bridges)."""
    unplug(ports)  # an earlier life's pairs, if the kernel has not removed them yet
    outside, inside = [], ["link set lo up"]
    gateway = False
    for i, p in enumerate(ports):
        tap, eth = tap_name(p.mac), f"eth{i}"
        outside.append(f"link add {tap} type veth peer name {eth} netns {pid}")
        outside.append(f"link set {tap} up")
        if p.bridge and _is_linux_bridge(p.bridge):
            outside.append(f"link set {tap} master {p.bridge}")
        inside += [f"link set {eth} address {p.mac}", f"addr add {p.ip}/{p.prefix} dev {eth}",
                   f"link set {eth} up"]  # fmt: skip
        if p.gateway and not gateway:
            gateway = True
            inside.append(f"route add default via {p.gateway} dev {eth}")
    await _ip(["ip"], "\n".join(outside) + "\n", "guest ports not made")
    await _ip(["nsenter", f"--net={netns_of(pid)}", "ip"], "\n".join(inside) + "\n",
              "guest ports not configured")  # fmt: skip
    switched = [
        f"eth{i}" for i, p in enumerate(ports) if not (p.bridge and _is_linux_bridge(p.bridge))
    ]
    if switched:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(_switcher[0], tx_checksum_off, netns_of(pid), switched)
        except OSError as exc:
            raise HypervisorUnavailable(f"guest ports not configured: {exc}") from None


SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17  # set transmit checksumming (struct ethtool_value)


def tx_checksum_off(netns: str, devices: Sequence[str]) -> None:
    """Transmit checksumming off on these devices of the namespace at `netns` (what
    `ethtool -K DEV tx off` does, without ethtool); TSO goes with it. OSError if not done."""
    with _socket_in(netns, socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for device in devices:
            value = ctypes.create_string_buffer(struct.pack("=II", ETHTOOL_STXCSUM, 0), 8)
            ifreq = struct.pack("=16sQ", device.encode(), ctypes.addressof(value))
            fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq.ljust(40, b"\0"))


def unplug(ports: Sequence[GuestPort]) -> list[str]:
    """Remove the host sides (and with them the guest sides) that exist; returns them."""
    gone = []
    for p in ports:
        tap = tap_name(p.mac)
        if Path(f"/sys/class/net/{tap}").exists():
            subprocess.run(["ip", "link", "del", tap], capture_output=True, timeout=10)
            gone.append(tap)
    return gone


# -- reaching a guest -------------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_switcher = [ThreadPoolExecutor(1, thread_name_prefix="netns")]


class _Stranded(OSError):
    """The thread could not go back to its own namespace: it must not be used again."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _socket_in(netns: str, family: int, kind: int) -> socket.socket:
    """A socket of the namespace at `netns`; this thread is back in its own after."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(family, kind)
            finally:
                try:
                    _setns(own)
                except OSError as exc:
                    raise _Stranded(exc.errno, str(exc)) from None
        finally:
            os.close(target)
    finally:
        os.close(own)


async def open_connection(
    host: str, port: int, netns: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to host:port, from inside the namespace `netns` when given. OSError
    when the namespace is gone (its guest ended) or the connection is refused."""
    if netns is None:
        return await asyncio.open_connection(host, port)
    loop = asyncio.get_running_loop()
    pool = _switcher[0]
    try:
        sock = await loop.run_in_executor(pool, _socket_in, netns, socket.AF_INET,
                                          socket.SOCK_STREAM)  # fmt: skip
    except _Stranded:
        if _switcher[0] is pool:  # a fresh thread for the next ones; this one stays idle
            _switcher[0] = ThreadPoolExecutor(1, thread_name_prefix="netns")
            pool.shutdown(wait=False)
        raise
    try:
        sock.setblocking(False)
        await loop.sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


async def http_request(
    method: str, host: str, port: int, path: str = "/", netns: str | None = None,
    within: float = 2.0,
) -> tuple[int, bytes]:  # fmt: skip
    """One HTTP/1.0 request (from inside `netns` when given): (status, body). OSError or
    TimeoutError when there is no answer, ConnectionError when it is not HTTP."""
    async with asyncio.timeout(within):
        reader, writer = await open_connection(host, port, netns)
        try:
            writer.write(f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
                         "Connection: close\r\n\r\n".encode())  # fmt: skip
            await writer.drain()
            data = b""
            while len(data) < 1 << 20 and (piece := await reader.read(65536)):
                data += piece
        finally:
            writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    words = head.split(b" ", 2)
    if len(words) < 2 or not words[0].startswith(b"HTTP/") or not words[1].isdigit():
        raise ConnectionError(f"{host}:{port} did not answer HTTP ({head[:40]!r})")
    return int(words[1]), body
