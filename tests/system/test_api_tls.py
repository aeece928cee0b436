"""The API served over TLS by the controller itself (`api.tls`): a real controller process
with a certificate of its own; clients that trust it are served, and links say https; plain
HTTP and clients that do not trust the certificate are refused."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_system
from tests.system.conftest import TOKEN, ControllerProcess


@pytest.fixture
def tls_controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    require_system(shutil.which("openssl") is not None, "openssl")
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    ctl = ControllerProcess(tmp_path, api={"tls": {"cert_file": str(cert), "key_file": str(key)}})
    ctl.migrate()
    ctl.start()
    try:
        yield ctl
    finally:
        ctl.stop()


def test_the_api_is_served_over_tls(tls_controller: ControllerProcess) -> None:
    ctl = tls_controller
    assert ctl.url.startswith("https://") and ctl.ca is not None
    with ctl.client() as c:  # trusts the controller's certificate
        assert c.get("/vimfm/api_versions").status_code == 200
        event = {
            "managedObjectId": "cmp-1", "faultType": "F", "probableCause": "p",
            "perceivedSeverity": "MAJOR", "eventType": "EQUIPMENT_ALARM",
        }  # fmt: skip
        assert c.post("/vim/v1/events", json=event).status_code == 200
        (alarm,) = c.get("/vimfm/v1/alarms").json()
        assert alarm["_links"]["self"]["href"].startswith("https://127.0.0.1:")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{ctl.url}/vimfm/api_versions", verify=ssl.create_default_context())
    plain = f"http://127.0.0.1:{ctl.port}/vimfm/v1/alarms"
    with pytest.raises(httpx.HTTPError):
        r = httpx.get(plain, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=2)
        assert r.status_code != 200, "served in the clear"
        raise httpx.HTTPError("refused")
