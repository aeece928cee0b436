"""libvirtd and virtlogd started by vimha, for the tests and `vimha up --libvirt`.

These machines have no systemd: nothing starts libvirtd, and nothing socket-activates
virtlogd (libvirtd needs it for the serial console's log file). `Libvirtd.start()` prepares
what the Debian packages' service units and maintainer scripts would (the `libvirt-qemu`
user QEMU runs as, /var/log/libvirt, /var/lib/libvirt), starts both daemons niced (the
QEMU guests inherit it: software emulation must not starve the cloud's own processes) and
waits until `qemu:///system` answers. A libvirtd that already answers is used as it is and
left running by `stop()`: only what this object started is stopped.

`PrivateLibvirtd` is one more libvirtd + virtlogd on the same machine, in a mount
namespace of its own (issue 19: live migration between two libvirt daemons on one machine).
libvirt keeps its state at fixed paths (/run/libvirt, /var/lib/libvirt, /var/log/libvirt,
/etc/libvirt): over each, this namespace mounts a folder of its own, so the two daemons
share nothing but the network namespace (the guests' bridges), the QEMU capabilities cache
and the machine. It listens on a UNIX socket outside those folders, reachable from every
namespace at the same path (`uri`: `qemu+unix:///system?socket=...`, a URI libvirt accepts
as a peer-to-peer migration's destination on the same host), and has a host UUID of its own
(libvirt refuses a migration between daemons with the same one).

Known here: libvirt 9.0 + QEMU 7.2 from Debian run guests by software emulation only
(domain type 'qemu'; /dev/kvm opens but does nothing), and libvirt refuses passt.
"""

from __future__ import annotations

import contextlib
import grp
import os
import shlex
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

QEMU_USER = "libvirt-qemu"  # Debian's libvirt runs QEMU as this user and group
URI = "qemu:///system"
DIRS = (Path("/var/log/libvirt/qemu"), Path("/var/lib/libvirt/qemu"), Path("/run/libvirt"))


class LibvirtdError(RuntimeError):
    """libvirtd could not be started; the message says why (and where its log is)."""


def find_libvirtd() -> str | None:
    """libvirtd, with the QEMU driver and virtlogd beside it, or None."""
    daemon = shutil.which("libvirtd") or shutil.which("libvirtd", path="/usr/sbin:/sbin")
    virtlogd = shutil.which("virtlogd") or shutil.which("virtlogd", path="/usr/sbin:/sbin")
    qemu = shutil.which("qemu-system-x86_64")
    drivers = list(Path("/usr/lib").glob("*/libvirt/connection-driver/libvirt_driver_qemu.so"))
    return daemon if daemon and virtlogd and qemu and drivers else None


def answers(uri: str = URI, timeout: float = 5.0) -> bool:
    """libvirtd answers on `uri` (asked with virsh: no binding needed)."""
    try:
        done = subprocess.run(
            ["virsh", "-q", "-c", uri, "uri"], capture_output=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _ensure(check: list[str], create: list[str]) -> None:
    if subprocess.run(check, capture_output=True, check=False).returncode != 0:
        subprocess.run(create, capture_output=True, check=True)


def prepare() -> None:
    """The user, groups, folders and device modes libvirtd needs (root only; idempotent)."""
    if os.geteuid() != 0:
        raise LibvirtdError("libvirtd (system) needs root")
    _ensure(["getent", "group", QEMU_USER], ["groupadd", "--system", QEMU_USER])
    _ensure(
        ["id", "-u", QEMU_USER],
        ["useradd", "--system", "--gid", QEMU_USER, "--no-create-home", "--home-dir",
         "/var/lib/libvirt", "--shell", "/usr/sbin/nologin", QEMU_USER],
    )  # fmt: skip
    kvm = Path("/dev/kvm")
    if kvm.exists():
        # What Debian's udev rules and packages do (no udev here): /dev/kvm root:kvm 0660,
        # QEMU's user in kvm. Else libvirt, which probed QEMU as root and saw KVM, finds it
        # unusable for QEMU's user at every start and probes QEMU again: each domain start
        # then took 75-100 s on a loaded machine, instead of about one.
        _ensure(["getent", "group", "kvm"], ["groupadd", "--system", "kvm"])
        subprocess.run(["usermod", "-a", "-G", "kvm", QEMU_USER], capture_output=True, check=True)
        os.chown(kvm, -1, grp.getgrnam("kvm").gr_gid)
        kvm.chmod(0o660)
    for d in DIRS:
        d.mkdir(parents=True, exist_ok=True)


def _sbin(name: str) -> str:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin") or name


class Libvirtd:
    """libvirtd + virtlogd for the system URI, each a child process of the caller."""

    def __init__(self, log_dir: Path, nice: int = 10, uri: str = URI) -> None:
        self.log_dir = log_dir
        self.nice = nice
        self.uri = uri
        self.procs: list[subprocess.Popen[bytes]] = []
        self.adopted = False  # it answered before start(): not ours to stop

    def _spawn(self, name: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                ["nice", "-n", str(self.nice), _sbin(name)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,  # a terminal's Ctrl-C is for the cloud, not for them
            )
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 30.0) -> None:
        if answers(self.uri):
            self.adopted = True
            return
        if find_libvirtd() is None:
            raise LibvirtdError("libvirtd, virtlogd or qemu-system-x86_64 missing")
        prepare()
        self._spawn("virtlogd")
        env = dict(os.environ)
        env.setdefault("LIBVIRT_LOG_OUTPUTS", "3:stderr")  # errors only: its log stays small
        daemon = self._spawn("libvirtd", env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if daemon.poll() is not None:
                self.stop()
                raise LibvirtdError(f"libvirtd exited ({daemon.returncode}); see {self.log_dir}")
            if answers(self.uri, timeout=2.0):
                return
            time.sleep(0.2)
        self.stop()
        raise LibvirtdError(f"libvirtd did not answer within {timeout:.0f} s; see {self.log_dir}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop what start() started (libvirtd first, then virtlogd). Guests keep running: QEMU
        processes do not depend on libvirtd; destroy them before if they must go."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout)
        self.procs.clear()


# The fixed paths libvirt keeps its state at, and the folder of the namespace over each.
PRIVATE = {
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "etc": "/etc/libvirt",
}


class PrivateLibvirtd:
    """libvirtd + virtlogd in a mount namespace of their own, with every folder of theirs
    under `base` and their socket at `<base>/sock/libvirt-sock` (`uri`). Root only.

    `stop()` destroys and undefines the domains it still runs (nothing else could reach
    them: their definitions live in its folders), then stops both daemons."""

    def __init__(self, base: Path, nice: int = 10) -> None:
        self.base = base
        self.nice = nice
        self.socket = base / "sock" / "libvirt-sock"
        self.uri = f"qemu+unix:///system?socket={self.socket}"
        self.host_uuid = str(uuid.uuid4())
        self.proc: subprocess.Popen[bytes] | None = None

    def _lay_out(self) -> None:
        for name in PRIVATE:
            (self.base / name).mkdir(parents=True, exist_ok=True)
        for sub in ("run/qemu", "lib/qemu", "log/qemu", "etc/qemu", "sock"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        for d in [self.base, *(d for d in self.base.iterdir() if d.is_dir())]:
            d.chmod(0o755)  # QEMU (libvirt-qemu) goes through lib/ and log/
        (self.base / "etc" / "libvirtd.conf").write_text(
            f'unix_sock_dir = "{self.socket.parent}"\n'
            'unix_sock_rw_perms = "0700"\n'
            'auth_unix_rw = "none"\n'
            'auth_unix_ro = "none"\n'
            f'host_uuid = "{self.host_uuid}"\n'
        )

    def _script(self) -> str:
        """Run by `sh` in the new mount namespace: the mounts, virtlogd, then libvirtd."""
        q = shlex.quote
        lines = ["set -e"]
        for name, path in PRIVATE.items():
            lines.append(f"mount --bind {q(str(self.base / name))} {q(path)}")
        nice = f"nice -n {int(self.nice)}"
        log = q(str(self.base / "daemons.log"))
        lines += [
            f"{nice} {q(_sbin('virtlogd'))} --pid-file /run/libvirt/virtlogd.pid >>{log} 2>&1 &",
            f"echo $! > {q(str(self.base / 'virtlogd.pid'))}",
            f"exec {nice} {q(_sbin('libvirtd'))} --pid-file /run/libvirt/libvirtd.pid >>{log} 2>&1",
        ]
        return "\n".join(lines)

    def start(self, timeout: float = 30.0) -> None:
        if find_libvirtd() is None or shutil.which("unshare") is None:
            raise LibvirtdError("libvirtd, virtlogd, qemu-system-x86_64 or unshare missing")
        prepare()
        self._lay_out()
        env = dict(os.environ)
        env.setdefault("LIBVIRT_LOG_OUTPUTS", "3:stderr")
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._script()],
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise LibvirtdError(
                    f"libvirtd exited ({self.proc.returncode}); see {self.base / 'daemons.log'}"
                )
            if self.socket.exists() and answers(self.uri, timeout=2.0):
                return
            time.sleep(0.2)
        self.stop()
        raise LibvirtdError(f"libvirtd did not answer within {timeout:.0f} s; see {self.base}")

    def _destroy_domains(self) -> None:
        def virsh(*argv: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(["virsh", "-q", "-c", self.uri, *argv], capture_output=True,
                                  text=True, timeout=30, check=False)  # fmt: skip

        listed = virsh("list", "--all", "--name")
        for name in listed.stdout.split():
            virsh("destroy", name)
            virsh("undefine", name)

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            # Stopped all the same if this fails: its QEMU processes, if any, stay running.
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._destroy_domains()
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        pid_file = self.base / "virtlogd.pid"
        try:
            pid = int(pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # virtlogd is a child of libvirtd's process (sh ran it, then became libvirtd): once
    # libvirtd is gone it is reaped by init; until then a zombie counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
