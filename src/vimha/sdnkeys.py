"""Where the SDN controller's state lives in the coordination backend (issue 18), and how its
intents are read back. Under /vimha/<vim>/sdn/:

    networks/<id>     a network intent (the API writes it: stored once, for every instance)
    ports/<id>        a port intent
    hosts/<host>      a compute node's switch: datapath id, tunnel endpoint (its agent writes)
    instances/<name>  a controller instance: its switches, roles, epochs (on its lease)
    masters/<dpid>    distributed model: the switch's elected master and epoch (on its lease)
    switches/<dpid>   the switch as its master last saw it: ports, flows, errors (kept)

Epochs come from the SDN service group's counter (/vimha/<vim>/groups/<group>/epoch), in both
models, so that a generation id never goes back when the model changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vimha.domain.sdn import Network, Port
from vimha.ports.coordination import Entry


def sdn_prefix(vim: str) -> str:
    return f"/vimha/{vim}/sdn/"


def dpid_key(dpid: int) -> str:
    return f"{dpid:016x}"


def network_from(doc: Mapping[str, Any]) -> Network | None:
    try:
        return Network(str(doc["id"]), str(doc["name"]), int(doc["vni"]))
    except (KeyError, TypeError, ValueError):
        return None


def port_from(doc: Mapping[str, Any]) -> Port | None:
    try:
        return Port(
            str(doc["id"]), str(doc["networkId"]), str(doc["host"]), str(doc["mac"]),
            str(doc["ip"]), str(doc["device"]),
            str(doc["instanceId"]) if doc.get("instanceId") else None,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None


def under(keys: Mapping[str, Entry], prefix: str) -> dict[str, Entry]:
    """The entries under `prefix`, by the rest of their key."""
    return {k[len(prefix) :]: e for k, e in keys.items() if k.startswith(prefix)}
