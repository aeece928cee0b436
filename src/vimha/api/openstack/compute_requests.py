"""Nova's server create request, turned into vimha's (a VDU-like request the compute
service resolves and plans as it does a native one). Every field Nova accepts is either
carried out or refused with 400 naming it: none is accepted and ignored.

Refused (vimha has no such thing): block storage (a block device other than the image on
the local disk), security groups other than `default` (vimha filters no traffic), an
admin password, a description, server tags, trusted image certificates, placement by
availability zone alone (ZONE:HOST forces a host), unknown scheduler hints.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vimha.api.openstack.microversions import Version
from vimha.domain.compute import ConfigDrive, Network, NetworkRequest, Vdu
from vimha.domain.errors import InvalidInput

MAX_SERVERS = 100
KNOWN = {
    "name",
    "imageRef",
    "flavorRef",
    "networks",
    "metadata",
    "user_data",
    "config_drive",
    "key_name",
    "availability_zone",
    "min_count",
    "max_count",
    "return_reservation_id",
    "security_groups",
    "block_device_mapping_v2",
    "description",
    "tags",
    "personality",
    "adminPass",
    "OS-DCF:diskConfig",
    "accessIPv4",
    "accessIPv6",
    "trusted_image_certificates",
    "host",
    "hypervisor_hostname",
}
HINTS = {"group", "different_host", "same_host"}


@dataclass(frozen=True, slots=True)
class ServerRequest:
    vdu: Vdu
    min_count: int
    max_count: int
    group: str | None = None
    reservation_id: bool = False
    hints: Mapping[str, Any] = field(default_factory=dict)


def _ref(value: object, what: str) -> str:
    """An id, or the URL of one (Nova accepts both)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"Invalid input for field/attribute {what}: a non-empty string")
    return value.rstrip("/").rsplit("/", 1)[-1]


def _image(server: Mapping[str, Any]) -> str:
    image = server.get("imageRef")
    for i, bdm in enumerate(server.get("block_device_mapping_v2") or []):
        if not isinstance(bdm, dict):
            raise InvalidInput(f"block_device_mapping_v2.{i}: an object")
        local_image = bdm.get("source_type") == "image" and bdm.get("destination_type") in (
            "local",
            None,
        )
        if not local_image or bdm.get("boot_index") not in (0, "0"):
            raise InvalidInput(
                f"block_device_mapping_v2.{i}: vimha has no block storage; only the image "
                "as the local root disk (source_type image, destination_type local, "
                "boot_index 0)"
            )
        if image and _ref(image, "imageRef") != bdm.get("uuid"):
            raise InvalidInput(f"block_device_mapping_v2.{i}: uuid differs from imageRef")
        image = bdm.get("uuid")
    if not image:
        raise InvalidInput("Invalid input for field/attribute imageRef: an image is required")
    return _ref(image, "imageRef")


def _networks(
    value: object, v: Version, networks: list[Network], max_count: int
) -> tuple[NetworkRequest, ...]:
    if value is None:
        if v >= (2, 37):
            raise InvalidInput(
                "Invalid input for field/attribute server: 'networks' is a required property"
            )
        value = "auto"
    if value == "none":
        return ()
    if value == "auto":
        if len(networks) != 1:
            raise InvalidInput(
                f"networks 'auto': {len(networks)} networks exist and vimha allocates none by "
                "itself; name one (networks: [{uuid: ...}])"
            )
        return (NetworkRequest((networks[0].id,)),)
    if not isinstance(value, list):
        raise InvalidInput("Invalid input for field/attribute networks: a list, 'auto' or 'none'")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict) or set(entry) - {"uuid", "port", "fixed_ip", "tag"}:
            raise InvalidInput(f"networks.{i}: an object with uuid, port, fixed_ip, tag")
        tags = (str(entry["tag"]),) if entry.get("tag") else ()
        if entry.get("port"):
            out.append(NetworkRequest((), tags, None, None, str(entry["port"])))
            continue
        if not entry.get("uuid"):
            raise InvalidInput(f"networks.{i}: uuid or port is required")
        fixed = entry.get("fixed_ip")
        if fixed and max_count > 1:
            raise InvalidInput(f"networks.{i}.fixed_ip: not with several servers (max_count)")
        out.append(NetworkRequest((str(entry["uuid"]),), tags, None, fixed or None, None))
    return tuple(out)


def _user_data(value: object) -> str | None:
    if value is None:
        return None
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("user_data: not base64") from None
    if len(raw) > 65535:
        raise InvalidInput("user_data: larger than 65535 bytes")
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise InvalidInput("user_data: vimha keeps user data as UTF-8 text") from None


def _files(value: object) -> tuple[tuple[str, str], ...]:
    if value is not None and not isinstance(value, list):
        raise InvalidInput("personality: a list of files")
    out = []
    for i, f in enumerate(value or []):
        if not isinstance(f, dict) or "path" not in f:
            raise InvalidInput(f"personality.{i}: an object with path and contents")
        content = _user_data(f.get("contents", ""))
        out.append((str(f["path"]), content or ""))
    return tuple(out)


def _count(server: Mapping[str, Any], key: str, default: int) -> int:
    value = server.get(key, default)
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"Invalid input for field/attribute {key}: an integer") from None
    if not 1 <= n <= MAX_SERVERS:
        raise InvalidInput(f"{key}: between 1 and {MAX_SERVERS}")
    return n


def _hints(given: object) -> dict[str, Any]:
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise InvalidInput("os:scheduler_hints: an object")
    unknown = set(given) - HINTS
    if unknown:
        raise InvalidInput(
            f"os:scheduler_hints: {', '.join(sorted(unknown))} not supported "
            f"(vimha's placement understands {', '.join(sorted(HINTS))})"
        )
    return dict(given)


def _refuse(server: Mapping[str, Any]) -> None:
    unknown = set(server) - KNOWN
    if unknown:
        raise InvalidInput(
            "Invalid input for field/attribute server: Additional properties are not allowed "
            f"({', '.join(sorted(unknown))})"
        )
    if server.get("description"):
        raise InvalidInput("description: vimha does not keep server descriptions")
    if server.get("tags"):
        raise InvalidInput("tags: vimha has no server tags (its ports have tags)")
    if server.get("adminPass"):
        raise InvalidInput("adminPass: vimha sets no password in the guest; use key_name")
    if server.get("trusted_image_certificates"):
        raise InvalidInput("trusted_image_certificates: not supported")
    if server.get("accessIPv4") or server.get("accessIPv6"):
        raise InvalidInput("accessIPv4/accessIPv6: not supported")
    for i, sg in enumerate(server.get("security_groups") or []):
        if not isinstance(sg, dict) or sg.get("name") != "default":
            raise InvalidInput(
                f"security_groups.{i}: vimha filters no traffic; only 'default' (no filtering)"
            )


def parse(
    doc: Mapping[str, Any],
    v: Version,
    networks: list[Network],
    keypairs: Mapping[str, str],
    admin: bool,
) -> ServerRequest:
    """The request, or InvalidInput naming the field (`networks`: every network, for
    `auto`; `keypairs`: name -> public key)."""
    server = doc.get("server")
    if not isinstance(server, dict):
        raise InvalidInput("Invalid input: 'server' is a required object")
    _refuse(server)
    name = server.get("name")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 255:
        raise InvalidInput("Invalid input for field/attribute name: 1 to 255 characters")
    hints = _hints(doc.get("os:scheduler_hints", doc.get("OS-SCH-HNT:scheduler_hints")))
    min_count = _count(server, "min_count", 1)
    max_count = _count(server, "max_count", min_count)
    if min_count > max_count:
        raise InvalidInput("min_count: must not exceed max_count")
    zone = server.get("availability_zone")
    forced = server.get("host") or server.get("hypervisor_hostname")
    if zone:
        zone_name, _, host = str(zone).partition(":")
        host = host.strip(":")
        if not host:
            raise InvalidInput(
                f"availability_zone {zone_name}: placing by zone is not supported yet (placement "
                "levels come with issue 15); ZONE:HOST forces a host"
            )
        forced = forced or host
    if forced:
        if not admin:
            raise InvalidInput("host: only an admin may choose the host")
        hints["host"] = str(forced)
    key_name = server.get("key_name")
    public_keys = {}
    if key_name is not None:
        if key_name not in keypairs:
            raise InvalidInput("Invalid key_name provided.")
        public_keys[str(key_name)] = keypairs[key_name]
    metadata = server.get("metadata") or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(val, str) and len(k) <= 255 and len(val) <= 255
        for k, val in metadata.items()
    ):
        raise InvalidInput("metadata: strings of at most 255 characters")
    group = hints.pop("group", None)
    vdu = Vdu(
        name=name.strip(),
        count=max_count,
        flavor=_ref(server.get("flavorRef"), "flavorRef"),
        image=_image(server),
        networks=_networks(server.get("networks"), v, networks, max_count),
        config_drive=ConfigDrive(
            _user_data(server.get("user_data")),
            dict(metadata),
            _files(server.get("personality")),
            public_keys,
        ),
        metadata=dict(metadata),
        hints=hints,
        key_name=key_name,
    )
    return ServerRequest(
        vdu,
        min_count,
        max_count,
        str(group) if group else None,
        bool(server.get("return_reservation_id")),
        hints,
    )
