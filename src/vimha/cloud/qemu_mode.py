"""`vimha up --libvirt`: the compute nodes' instances as QEMU guests through libvirtd.

The agents of cmp-1..4 use the `libvirt:///system` hypervisor (one libvirtd for the machine,
started by `vimha up` unless one already answers; each agent sees only its own domains, named
after its node and its guests' folder). Each VNF network is a Linux bridge of the root
namespace holding the network's gateway address, so the guests are reachable from the host
(their health checks, `vimha chaos instance-*`), and every node's guests of one network share
it. The demo image is the QEMU demo guest (Debian's generic kernel and a busybox initramfs,
built and cached by `cloud/guest_image.py`): slow to boot under software emulation (about
10 s for one guest on an idle 2-core machine, a minute for five at once).

Stopping the cloud destroys its domains (the guests are killed with the nodes' processes,
their definitions undefined), deletes the bridges, and stops the libvirtd it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vimha.cloud.libvirtd import URI, Libvirtd, LibvirtdError, find_libvirtd
from vimha.domain.errors import Permanent
from vimha.drivers.hypervisors import guest_scope

log = logging.getLogger("vimha.cloud.qemu")
NETWORKS = {"vnf-a": "10.96.0.0/16", "vnf-b": "10.97.0.0/16"}
RAM_MIB = 256  # Debian's generic kernel and the initramfs need more than the process guest


def gateway(cidr: str) -> str:
    """The network's first address: its gateway, held by the host's bridge."""
    base = cidr.split("/")[0].rsplit(".", 1)[0]
    return f"{base}.1"


def available() -> str | None:
    """None when this machine can run `--libvirt`, else why not."""
    if os.geteuid() != 0:
        return "it needs root (libvirtd, bridges)"
    if shutil.which("ip") is None:
        return "iproute2 (ip) is missing"
    if find_libvirtd() is None:
        return "libvirtd, virtlogd or qemu-system-x86_64 missing (apt-get install " \
            "libvirt-daemon-system qemu-system-x86; `make up` does)"  # fmt: skip
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "the libvirt Python binding is missing (`make up` installs it)"
    return None


def closed_to_qemu(data_dir: Path) -> Path | None:
    """The first folder on the way to `data_dir` that other users cannot traverse (QEMU,
    run by libvirtd as libvirt-qemu, opens the guests' disks and config drives there), or
    None. A folder not made yet is made by `vimha up` with the usual modes."""
    path = data_dir.resolve()
    for folder in (*reversed(path.parents), path):
        if not folder.exists():
            return None
        if not folder.stat().st_mode & 0o001:
            return folder
    return None


def _ip(*argv: str, check: bool = True) -> None:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise Permanent(f"ip {' '.join(argv)}: {done.stderr.strip()}")


@dataclass
class QemuPlan:
    """The libvirt mode of one cloud (its API port names its bridges)."""

    port: int
    data_dir: Path
    image: Path | None = None  # the demo guest's bundle, once built
    daemon: Libvirtd | None = None
    made: list[str] = field(default_factory=list)

    def bridges(self) -> dict[str, str]:
        return {name: f"vhq{self.port}{name[-1]}" for name in NETWORKS}

    def patch_agent(self, config: dict[str, Any], node: Any) -> None:
        hv = config.get("hypervisor")
        if hv is not None:
            hv["url"] = "libvirt:///system"
            hv["bridges"] = self.bridges()
            hv["report_every"] = 5.0

    def prepare(self) -> None:
        """The guest image, the bridges and libvirtd (blocking; a minute at most when the
        kernel must be fetched)."""
        from vimha.cloud.guest_image import GuestImageError, build

        if (closed := closed_to_qemu(self.data_dir)) is not None:
            raise Permanent(
                f"--libvirt: QEMU runs as the libvirt-qemu user and cannot reach the guests' "
                f"files: {closed} is closed to other users (mode "
                f"{closed.stat().st_mode & 0o777:o}); choose a --data-dir every user can "
                "traverse (for example under /var/lib or /tmp)"
            )

        try:
            self.image = build()  # cached in $VIMHA_CACHE or ./.vimha-cache (`make up`)
        except GuestImageError as exc:
            raise Permanent(f"--libvirt: the guest image: {exc}") from None
        for network, bridge in self.bridges().items():
            _ip("link", "del", bridge, check=False)  # left over by a cloud that was killed
            _ip("link", "add", bridge, "type", "bridge")
            self.made.append(bridge)
            prefix = NETWORKS[network].split("/")[1]
            _ip("addr", "add", f"{gateway(NETWORKS[network])}/{prefix}", "dev", bridge)
            _ip("link", "set", bridge, "up")
        self.daemon = Libvirtd(self.data_dir / "logs" / "libvirtd")
        try:
            self.daemon.start()
        except LibvirtdError as exc:
            self.destroy()
            raise Permanent(f"--libvirt: {exc}") from None

    def destroy(self, nodes: list[str] | None = None) -> None:
        """Undefine the cloud's domains (their QEMU processes were killed with the nodes),
        delete the bridges, stop the libvirtd started here."""
        if nodes:
            self._undefine(nodes)
        for bridge in self.made:
            _ip("link", "del", bridge, check=False)
        self.made.clear()
        if self.daemon is not None:
            self.daemon.stop()
            self.daemon = None

    def _undefine(self, nodes: list[str]) -> None:
        try:
            import libvirt
        except ImportError:
            return
        prefixes = tuple(
            f"vimha-{guest_scope(n, self.data_dir / 'nodes' / n / 'guests')}-" for n in nodes
        )
        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(URI)
            try:
                for dom in conn.listAllDomains():
                    if not dom.name().startswith(prefixes):
                        continue
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            finally:
                conn.close()
