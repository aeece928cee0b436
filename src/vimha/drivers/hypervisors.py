"""Hypervisor drivers chosen by URL: `process://` (the embedded default) or `libvirt://...`
(a real libvirtd and QEMU guests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vimha.domain.errors import InvalidInput
from vimha.ports.hypervisor import Hypervisor

SCHEMES = ("process", "libvirt", "libvirt+test")


def check_url(url: str) -> str:
    scheme = url.split("://", 1)[0]
    if "://" not in url or (scheme not in SCHEMES and not scheme.startswith("libvirt+")):
        raise InvalidInput(
            f"hypervisor url {url!r}: use process://, libvirt:///system or libvirt+test:///default"
        )
    return url


def open_hypervisor(
    url: str,
    node: str,
    base: Path,
    cgroups: bool = True,
    migration_uri: str | None = None,
    migration_address: str | None = None,
) -> Hypervisor:
    scheme = check_url(url).split("://", 1)[0]
    if scheme == "process":
        from vimha.drivers.hv_process import ProcessHypervisor

        return ProcessHypervisor(base, node, use_cgroups=cgroups)
    from vimha.drivers.hv_libvirt import LibvirtHypervisor

    # Several agents, of several clouds, may share one libvirtd (the embedded cloud):
    # domains carry the node and its guests' folder.
    return LibvirtHypervisor(
        url,
        base,
        scope=guest_scope(node, base),
        migration_uri=migration_uri,
        migration_address=migration_address,
    )


def guest_scope(node: str, base: Path) -> str:
    """What names a node's guests on a shared machine: the node and its guests' folder."""
    return f"{node}-{hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:8]}"
