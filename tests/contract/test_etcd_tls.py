"""The etcd driver against a real etcd member that serves TLS and requires client
certificates (--client-cert-auth): reached with the CA and this node's certificate named
in the URL; refused without the certificate, and when the CA is not the members'."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, require_system
from tests.support.etcd import find_etcd
from vimha.drivers.coord_etcd import EtcdCoordination
from vimha.ports.coordination import CoordinationUnavailable


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def pki(d: Path, name: str = "ca") -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by it."""
    files = {k: d / f"{name}-{k}.pem" for k in ("ca", "ca_key", "srv", "srv_key", "cli", "cli_key")}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            f"/CN={name}", "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))  # fmt: skip
    for who, extra in (
        ("srv", "subjectAltName=IP:127.0.0.1"),
        ("cli", "extendedKeyUsage=clientAuth"),
    ):
        csr = d / f"{name}-{who}.csr"
        ext = d / f"{name}-{who}.ext"
        ext.write_text(extra + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}",
                "-keyout", str(files[f"{who}_key"]), "-out", str(csr))  # fmt: skip
        openssl("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey",
                str(files["ca_key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext),
                "-out", str(files[who]))  # fmt: skip
    return files


@pytest.fixture
def tls_etcd(tmp_path: Path) -> Iterator[tuple[str, dict[str, Path], dict[str, Path]]]:
    require_system(find_etcd() is not None, "etcd (apt: etcd-server)")
    require_system(shutil.which("openssl") is not None, "openssl")
    files, other = pki(tmp_path), pki(tmp_path, "other")
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        ["etcd", "--name", "m1", "--data-dir", str(tmp_path / "data"),
         "--listen-client-urls", f"https://127.0.0.1:{client}",
         "--advertise-client-urls", f"https://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"m1=http://127.0.0.1:{peer}",
         "--cert-file", str(files["srv"]), "--key-file", str(files["srv_key"]),
         "--client-cert-auth", "--trusted-ca-file", str(files["ca"])],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"127.0.0.1:{client}", files, other
    finally:
        proc.kill()
        proc.wait()


async def test_etcd_reached_over_tls_with_a_client_certificate(
    tls_etcd: tuple[str, dict[str, Path], dict[str, Path]],
) -> None:
    member, f, other = tls_etcd
    url = f"etcd://{member}?ca_file={f['ca']}&cert_file={f['cli']}&key_file={f['cli_key']}"
    coord = EtcdCoordination(url)
    try:
        deadline = time.monotonic() + 20
        while True:  # the member starting
            try:
                await coord.put("/tls/k", "v")
                break
            except CoordinationUnavailable:
                assert time.monotonic() < deadline, "etcd over TLS did not answer"
                time.sleep(0.2)
        entry = await coord.get("/tls/k")
        assert entry is not None and entry.value == "v"
    finally:
        await coord.close()
    refused = [
        f"etcd://{member}?ca_file={f['ca']}",  # no client certificate
        f"etcd://{member}?ca_file={other['ca']}&cert_file={f['cli']}&key_file={f['cli_key']}",
        f"etcd://{member}?ca_file={f['ca']}&cert_file={other['cli']}&key_file={other['cli_key']}",
        f"etcd://{member}",  # plain HTTP to a TLS member
    ]
    for bad in refused:
        coord = EtcdCoordination(bad)
        try:
            with pytest.raises(CoordinationUnavailable):
                await coord.get("/tls/k")
        finally:
            await coord.close()
