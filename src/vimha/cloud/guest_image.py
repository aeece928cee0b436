"""The demo guest for QEMU: Debian's generic kernel plus a busybox initramfs, as one bundle.

`build(cache)` returns a tar holding `vmlinuz`, `initrd.img` and `guest.json` (the kernel's
release and the command line it needs): the `kernel+initrd` image format of the libvirt
driver. The kernel comes from Debian's `linux-image-<abi>-amd64` package (the generic one:
the cloud kernel lacks i6300esb), fetched with `apt-get download` and unpacked into the cache
(nothing goes into /boot). The initramfs holds a static busybox (`busybox-static`), the
kernel modules the guest needs with what they depend on, and the guest's scripts
(`cloud/guest/`: init, the HTTP handler, a JSON flattener in awk).

Idempotent and fast once built: the bundle's name carries a digest of everything that goes
into it, and a kernel already in the cache is used without asking apt (`refresh=True` asks).
Run as `python -m vimha.cloud.guest_image [--cache DIR] [--refresh]` (what
scripts/build-guest-image.sh does); it prints the bundle's path.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

BUILDER_VERSION = "1"
KERNEL_META = "linux-image-amd64"  # Debian's generic kernel, amd64
BUSYBOX = Path("/bin/busybox")  # from busybox-static
# What the guest loads, in this order (each after what it depends on): virtio NICs and the
# config drive on virtio-blk, ISO 9660, the i6300esb watchdog, pvpanic (a panic is reported
# to QEMU, so libvirt sees a crash), the ACPI power button (graceful shutdown).
MODULES = ("virtio_pci", "virtio_net", "virtio_blk", "isofs", "i6300esb", "pvpanic_mmio",
           "button", "evdev")  # fmt: skip
CMDLINE = "console=ttyS0 quiet loglevel=3"
GUEST_FILES = ("init", "http", "jsonflat.awk", "poweroff")


class GuestImageError(RuntimeError):
    """The guest image could not be built; the message says what is missing."""


@dataclass(frozen=True, slots=True)
class Kernel:
    release: str  # e.g. 6.1.0-57-amd64
    root: Path  # the unpacked package

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.release / "kernel"


def default_cache() -> Path:
    return Path(os.environ.get("VIMHA_CACHE", ".vimha-cache")).resolve()


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise GuestImageError(f"{argv[0]} not found") from e
    if done.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)}: {done.stderr.strip() or done.returncode}")
    return str(done.stdout)


def kernel_package() -> str:
    """The versioned package the generic kernel metapackage depends on now."""
    out = _run(["apt-cache", "depends", KERNEL_META])
    found = re.findall(r"Depends: (linux-image-[0-9][^\s]*-amd64)$", out, re.MULTILINE)
    if not found:
        raise GuestImageError(f"apt knows no {KERNEL_META} (apt-get update?)")
    return str(found[0])


def fetch_kernel(cache: Path, refresh: bool = False) -> Kernel:
    """Debian's generic kernel unpacked under cache/kernel/<package>/ (downloaded once).
    apt's lists are updated once if they do not know the package or its file (a new
    machine, or a kernel ABI that moved on)."""
    base = cache / "kernel"
    cached = sorted(p for p in base.glob("linux-image-*") if (p / ".complete").exists())
    if cached and not refresh:
        return _kernel_in(cached[-1])
    try:
        return _download_kernel(base, cache / "debs")
    except GuestImageError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"])
        return _download_kernel(base, cache / "debs")


def _download_kernel(base: Path, debs: Path) -> Kernel:
    package = kernel_package()
    root = base / package
    if not (root / ".complete").exists():
        debs.mkdir(parents=True, exist_ok=True)
        if not list(debs.glob(f"{package}_*.deb")):
            # As root apt warns that its sandbox user cannot write here; it is harmless.
            _run(["apt-get", "download", "-qq", "-o", "APT::Sandbox::User=root", package], debs)
        (deb,) = debs.glob(f"{package}_*.deb")
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (root / ".complete").touch()
        deb.unlink()  # the unpacked tree is what is used (~400 MB, modules of every driver)
    return _kernel_in(root)


def _kernel_in(root: Path) -> Kernel:
    releases = [p.name for p in (root / "lib" / "modules").iterdir()]
    if len(releases) != 1:
        raise GuestImageError(f"{root}: expected one kernel release, found {releases}")
    return Kernel(releases[0], root)


def _module_name(path: Path) -> str:
    return path.name.removesuffix(".ko").replace("-", "_")


def module_closure(modules_dir: Path, wanted: Iterable[str]) -> list[Path]:
    """The modules' files with everything they depend on, each after its dependencies (from
    the `depends=` of each module's .modinfo: the unpacked package has no modules.dep)."""
    index = {_module_name(p): p for p in modules_dir.rglob("*.ko")}
    order: list[Path] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name not in index:
            raise GuestImageError(f"kernel module {name} not found under {modules_dir}")
        found = re.search(rb"\0depends=([^\0]*)\0", index[name].read_bytes())
        for dep in found.group(1).decode().split(",") if found else []:
            if dep:
                visit(dep.replace("-", "_"))
        order.append(index[name])

    for name in wanted:
        visit(name)
    return order


class Cpio:
    """A newc cpio archive (what the kernel unpacks as an initramfs), written in memory with
    fixed owners and times, so the same inputs give the same bytes."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.ino = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        self.out.write(b"070701" + b"".join(b"%08X" % f for f in fields) + encoded)
        self.out.write(b"\0" * (-(110 + len(encoded)) % 4))
        self.out.write(data + b"\0" * (-len(data) % 4))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, executable: bool = False) -> None:
        self._entry(name, 0o100755 if executable else 0o100644, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.out.getvalue()


def _guest_file(name: str) -> bytes:
    return resources.files("vimha.cloud").joinpath("guest", name).read_bytes()


def _check_static(busybox: Path) -> bytes:
    if not busybox.exists():
        raise GuestImageError(f"{busybox} not found (apt: busybox-static)")
    data = busybox.read_bytes()
    if b"/lib64/ld-linux" in data[:8192] or b"ld-linux-x86-64.so" in data[:8192]:
        raise GuestImageError(f"{busybox} is linked dynamically (apt: busybox-static)")
    return data


def initramfs(kernel: Kernel, busybox: Path = BUSYBOX) -> bytes:
    """The guest's initramfs, gzip-compressed."""
    cpio = Cpio()
    for d in ("bin", "dev", "etc", "etc/vimha", "etc/acpi", "etc/acpi/PWRF", "lib",
              "lib/modules", "mnt", "proc", "run", "sys", "tmp"):  # fmt: skip
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)  # init's stdout before devtmpfs is mounted
    cpio.file("bin/busybox", _check_static(busybox), executable=True)
    cpio.symlink("bin/sh", "busybox")
    cpio.file("init", _guest_file("init"), executable=True)
    cpio.file("etc/vimha/http", _guest_file("http"), executable=True)
    cpio.file("etc/vimha/jsonflat.awk", _guest_file("jsonflat.awk"))
    cpio.file("etc/acpi/PWRF/00000080", _guest_file("poweroff"), executable=True)
    names = []
    for path in module_closure(kernel.modules, MODULES):
        cpio.file(f"lib/modules/{path.name}", path.read_bytes())
        names.append(path.name)
    cpio.file("etc/vimha/modules", ("\n".join(names) + "\n").encode())
    return gzip.compress(cpio.finish(), compresslevel=6, mtime=0)


def _key(kernel: Kernel, busybox: Path) -> str:
    h = hashlib.sha256(f"{BUILDER_VERSION} {kernel.release} {CMDLINE} {MODULES}".encode())
    h.update(hashlib.sha256(kernel.vmlinuz.read_bytes()).digest())
    h.update(hashlib.sha256(busybox.read_bytes()).digest())
    for name in GUEST_FILES:
        h.update(name.encode() + b"\0" + _guest_file(name))
    return h.hexdigest()[:16]


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build(cache: Path | None = None, refresh: bool = False, busybox: Path = BUSYBOX) -> Path:
    """The guest bundle (a tar: vmlinuz, initrd.img, guest.json), built if not yet cached."""
    cache = (cache or default_cache()).resolve()
    kernel = fetch_kernel(cache, refresh)
    out_dir = cache / "guest"
    bundle = out_dir / f"vimha-guest-{_key(kernel, busybox)}.tar"
    if bundle.exists():
        return bundle
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = {"format": "kernel+initrd", "kernel": kernel.release, "cmdline": CMDLINE}
    with (
        tempfile.NamedTemporaryFile(dir=out_dir, suffix=".tmp", delete=False) as tmp,
        tarfile.open(fileobj=tmp, mode="w", format=tarfile.GNU_FORMAT) as tar,
    ):
        _add(tar, "guest.json", json.dumps(manifest, indent=1).encode() + b"\n")
        _add(tar, "vmlinuz", kernel.vmlinuz.read_bytes())
        _add(tar, "initrd.img", initramfs(kernel, busybox))
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, bundle)
    for old in out_dir.glob("vimha-guest-*.tar"):
        if old != bundle:  # an image already imported lives on in the image store
            old.unlink()
    latest = out_dir / "vimha-guest.tar"
    latest.unlink(missing_ok=True)
    latest.symlink_to(bundle.name)
    return bundle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--cache", type=Path, default=None, help="default: $VIMHA_CACHE or ./.vimha-cache"
    )
    parser.add_argument("--refresh", action="store_true", help="ask apt for the newest kernel")
    args = parser.parse_args(argv)
    try:
        print(build(args.cache, args.refresh))
    except GuestImageError as e:
        print(f"build-guest-image: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
