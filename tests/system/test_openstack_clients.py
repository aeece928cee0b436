"""The embedded cloud driven only through OpenStack's own clients (issue 16): openstacksdk in
the test, and python-openstackclient (`openstack --os-cloud vimha ...`) with the
clouds.yaml that `vimha up` wrote. Authenticate, list the catalog, boot servers on two
networks in an anti-affinity group (on distinct hosts; one more than the rule allows ends
in ERROR with Nova's "No valid host" fault), reboot, stop, start, error bodies, delete; a
compute service forced down (its host fenced, its server rebuilt elsewhere), a server
evacuated after its host's power-off."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openstack
import openstack.exceptions as osx
import pytest
from openstack.connection import Connection

from tests.conftest import cloud_port
from tests.system.test_embedded_cloud import Cloud, until

pytestmark = pytest.mark.system
OPENSTACK = str(Path(sys.executable).parent / "openstack")
PUBLIC_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g vnfm@ops"
)


class Clients:
    def __init__(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(cloud.data / "clouds.yaml")}
        config = openstack.config.OpenStackConfig(config_files=[str(cloud.data / "clouds.yaml")])
        self.sdk = Connection(config=config.get_one("vimha"))

    def osc(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        """`openstack --os-cloud vimha ARGS`."""
        r = subprocess.run(
            [OPENSTACK, "--os-cloud", "vimha", *args],
            capture_output=True,
            text=True,
            timeout=180,
            env=self.env,
        )
        if ok:
            assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr[-2000:]}"
        return r

    def osc_json(self, *args: str) -> Any:
        return json.loads(self.osc(*args, "-f", "json").stdout)

    def status(self, name: str, wanted: str, timeout: float = 120) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            server = self.sdk.compute.find_server(name, ignore_missing=False)
            assert server.status != "ERROR" or wanted == "ERROR", server.fault
            return dict(server.to_dict()) if server.status == wanted else None

        return until(reached, timeout)  # type: ignore[no-any-return]


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    """`vimha up` in the foreground, given minutes to answer (this machine's two cores are
    shared), stopped with SIGTERM after, whatever happened."""
    data, port = tmp_path / "cloud", cloud_port()
    data.mkdir()
    with open(data / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vimha", "up", "--data-dir", str(data), "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "VIMHA_ADMIN_TOKEN": ""},
        )
    try:
        url = f"http://127.0.0.1:{port}/vimfm/api_versions"
        until(lambda: proc.poll() is None and answers(url), 300)
        cloud = Cloud(data, port)
        until(lambda: all(h["healthStatus"] == "UP" for h in cloud.hosts().values()), 180)
        c = Clients(cloud)
        # the demo catalog is created once the compute hosts are up
        until(lambda: len(list(c.sdk.network.networks())) == 2, 180)
        until(lambda: [i.status for i in c.sdk.image.images(name="demo-guest")] == ["active"], 60)
        yield c
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def guest_answers(ip: str) -> dict[str, Any] | None:
    try:
        return dict(httpx.get(f"http://{ip}:8080/", timeout=2).json())
    except (httpx.HTTPError, ValueError):
        return None


def test_openstack_clients_drive_the_embedded_cloud(clients: Clients) -> None:
    sdk = clients.sdk
    # authenticate: a Keystone token, valid on vimha's native API as well
    token = sdk.session.get_token()
    native = httpx.get(
        f"{clients.cloud.url}/vim/v1/instances",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert native.status_code == 200
    assert "image" in {
        s["type"] for s in sdk.session.auth.get_access(sdk.session).service_catalog.catalog
    }
    # the catalog, through the CLI
    assert "m1.tiny" in {f["Name"] for f in clients.osc_json("flavor", "list")}
    assert "demo-guest" in {i["Name"] for i in clients.osc_json("image", "list")}
    networks = {n["Name"]: n["ID"] for n in clients.osc_json("network", "list")}
    assert set(networks) == {"vnf-a", "vnf-b"}

    # an anti-affinity group, four servers on two networks in it: four distinct hosts
    group = sdk.compute.create_server_group(name="apart", policy="anti-affinity")
    flavor = sdk.compute.find_flavor("m1.tiny", ignore_missing=False)
    image = sdk.image.find_image("demo-guest", ignore_missing=False)
    sdk.compute.create_server(
        name="os",
        flavor_id=flavor.id,
        image_id=image.id,
        networks=[{"uuid": networks["vnf-a"]}, {"uuid": networks["vnf-b"]}],
        scheduler_hints={"group": group.id},
        min_count=4,
        max_count=4,
    )
    servers = {n: clients.status(f"os-{n}", "ACTIVE") for n in range(1, 5)}
    hosts = {s["compute_host"] for s in servers.values()}
    assert hosts == {"cmp-1", "cmp-2", "cmp-3", "cmp-4"}
    first = servers[1]
    for network in ("vnf-a", "vnf-b"):
        (address,) = first["addresses"][network]
        assert address["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e")
    # the guest really runs: it answers on its port with its identity
    ip = first["addresses"]["vnf-a"][0]["addr"]
    answer = until(lambda: guest_answers(ip), 60)
    assert answer["instance"] == first["id"]

    # one more than the rule allows: ERROR, with Nova's fault
    sdk.compute.create_server(
        name="os-extra",
        flavor_id=flavor.id,
        image_id=image.id,
        networks=[{"uuid": networks["vnf-a"]}],
        scheduler_hints={"group": group.id},
    )
    failed = clients.status("os-extra", "ERROR")
    assert failed["fault"]["code"] == 500
    assert failed["fault"]["message"].startswith("No valid host was found")
    assert failed["compute_host"] is None
    shown = clients.osc_json("server", "show", "os-extra")
    assert shown["status"] == "ERROR" and "No valid host" in shown["fault"]["message"]

    # reboot, stop, start, through the CLI
    clients.osc("server", "reboot", "--wait", "os-1")
    clients.osc("server", "stop", "os-1")
    clients.status("os-1", "SHUTOFF")
    assert guest_answers(ip) is None
    clients.osc("server", "start", "os-1")
    clients.status("os-1", "ACTIVE")
    assert until(lambda: guest_answers(ip), 60)["instance"] == first["id"]
    clients.osc("server", "reboot", "--hard", "--wait", "os-1")
    events = {e["Action"] for e in clients.osc_json("server", "event", "list", "os-1")}
    assert events == {"create", "reboot", "stop", "start"}

    # errors as the clients print them
    with pytest.raises(
        osx.ConflictException, match="cannot start instance os-1 while it is ACTIVE"
    ):
        sdk.compute.start_server(first["id"])
    with pytest.raises(osx.NotFoundException, match="could not be found"):
        sdk.compute.get_server("no-such-server")
    with pytest.raises(osx.ConflictException, match=r"Compute service of cmp-\d is still in use"):
        sdk.compute.evacuate_server(first["id"])
    r = clients.osc("server", "show", "no-such-server", ok=False)
    assert r.returncode == 1 and "No Server found for no-such-server" in r.stderr

    # one instance, two faces: the native API lists the servers, and deletes are seen
    names = {i["name"] for i in native_instances(clients, token)}
    assert {"os-1", "os-2", "os-3", "os-4", "os-extra"} <= names
    clients.osc("server", "delete", "--wait", "os-1", "os-2", "os-3", "os-4", "os-extra")
    sdk.compute.delete_server_group(group)
    assert not {"os-1", "os-extra"} & {i["name"] for i in native_instances(clients, token)}
    assert clients.osc_json("server", "list", "--name", "^os-") == []

    # through openstacksdk as Heat, Terraform and the VNFMs call it: an image uploaded, a key
    # pair imported, a port with a fixed MAC and IP given to a server, which keeps them when
    # it is migrated (cold) to another host
    blob = os.urandom(256 * 1024)
    uploaded = sdk.image.create_image(
        name="os-blob", data=blob, disk_format="raw", container_format="bare"
    )
    got = until(lambda: (i := sdk.image.get_image(uploaded.id)).status == "active" and i, 60)
    assert got.size == len(blob) and got.hash_value == hashlib.sha256(blob).hexdigest()
    sdk.image.delete_image(uploaded.id)
    assert sdk.image.find_image("os-blob") is None
    key = sdk.compute.create_keypair(name="os-key", public_key=PUBLIC_KEY)
    assert key.fingerprint and sdk.compute.get_keypair("os-key").public_key == PUBLIC_KEY
    (subnet,) = sdk.network.subnets(network_id=networks["vnf-b"])
    fixed = subnet.allocation_pools[0]["end"]
    port = sdk.network.create_port(
        network_id=networks["vnf-b"],
        mac_address="fa:16:3e:0b:0b:0b",
        fixed_ips=[{"subnet_id": subnet.id, "ip_address": fixed}],
    )
    sdk.compute.create_server(
        name="os-port",
        flavor_id=flavor.id,
        image_id=image.id,
        networks=[{"port": port.id}],
        key_name="os-key",
    )
    placed = clients.status("os-port", "ACTIVE")
    (address,) = placed["addresses"]["vnf-b"]
    assert (address["addr"], address["OS-EXT-IPS-MAC:mac_addr"]) == (fixed, "fa:16:3e:0b:0b:0b")
    assert placed["key_name"] == "os-key"
    assert until(lambda: guest_answers(fixed), 60)["instance"] == placed["id"]
    sdk.compute.migrate_server(placed["id"])
    migrated = until(
        lambda: (
            (s := clients.status("os-port", "ACTIVE"))["compute_host"] != placed["compute_host"]
            and s
        ),
        120,
    )
    assert migrated["addresses"]["vnf-b"][0]["addr"] == fixed
    assert until(lambda: guest_answers(fixed), 60)["instance"] == placed["id"]
    clients.osc("server", "delete", "--wait", "os-port")
    sdk.network.delete_port(port.id)
    sdk.compute.delete_keypair("os-key")

    # a compute service forced down (as OPNFV Doctor's inspector does): its host is fenced
    # through its BMC and its server rebuilt elsewhere, same address, serving
    sdk.compute.create_server(
        name="os-ev", flavor_id=flavor.id, image_id=image.id, networks=[{"uuid": networks["vnf-a"]}]
    )
    before = clients.status("os-ev", "ACTIVE")
    host, ip = before["compute_host"], before["addresses"]["vnf-a"][0]["addr"]
    assert until(lambda: guest_answers(ip), 60)["instance"] == before["id"]
    v = ("--os-compute-api-version", "2.53")
    clients.osc(*v, "compute", "service", "set", "--down", host, "nova-compute")

    def forced() -> bool:
        listed = clients.osc_json(*v, "compute", "service", "list", "--long")
        service = next(s for s in listed if s["Host"] == host)
        return bool(service["State"] == "down" and service["Forced Down"] is True)

    until(forced, 30)  # at once on the controller asked, on the others once it is off
    until(lambda: clients.cloud.hosts()[host]["bmc"]["powerState"] == "Off", 60)
    after = until(
        lambda: (s := clients.status("os-ev", "ACTIVE"))["compute_host"] != host and s, 120
    )
    assert after["addresses"]["vnf-a"][0]["addr"] == ip
    assert until(lambda: guest_answers(ip), 60)["instance"] == before["id"]

    # a host powered off, then its server evacuated as a VNFM would (OPNFV Doctor): done by
    # vimha's recovery already, or rebuilt by the evacuation; either way elsewhere, same IP
    host, ip = after["compute_host"], after["addresses"]["vnf-a"][0]["addr"]
    assert "powered off" in clients.cloud.chaos("power-off", host)

    def evacuated() -> bool:
        try:
            sdk.compute.evacuate_server(before["id"])
            return True
        except osx.ConflictException:  # not seen down yet: "still in use"
            return False

    until(evacuated, 60)
    moved = until(lambda: (s := clients.status("os-ev", "ACTIVE"))["compute_host"] != host and s)
    assert moved["addresses"]["vnf-a"][0]["addr"] == ip
    assert until(lambda: guest_answers(ip), 60)["instance"] == before["id"]
    clients.osc("server", "delete", "--wait", "os-ev")


def native_instances(clients: Clients, token: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{clients.cloud.url}/vim/v1/instances",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    r.raise_for_status()
    return list(r.json())


def test_clouds_yaml_is_written_next_to_the_token(tmp_path: Path) -> None:
    """Without the cloud running: what `vimha up` writes."""
    from vimha.cloud.embedded import write_clouds_yaml

    path = write_clouds_yaml(tmp_path, "http://127.0.0.1:1", "secret-token-0123456789")
    assert path.stat().st_mode & 0o777 == 0o600
    config = openstack.config.OpenStackConfig(config_files=[str(path)]).get_one("vimha")
    auth = config.config["auth"]
    assert auth["auth_url"] == "http://127.0.0.1:1/identity" and auth["username"] == "admin"
    assert auth["password"] == "secret-token-0123456789"
