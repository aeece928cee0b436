"""The SDN page's data (issue 18's controller): each switch with its master, the master's
epoch (its OpenFlow generation id), the SDN instances connected to it, its flows and what is
down; each SDN instance with its model, lease and the switches it masters; the network and
port intents. Read from the coordination mirror the controller keeps (no store read)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from vimha.engine.runtime import Runtime


def available(rt: Runtime) -> bool:
    """Shown once an SDN instance or a switch has been published (`vimha up --netns`)."""
    return bool(rt.sdn.instances() or rt.sdn.switches())


MARKED = ("dpid", "master", "epoch", "connected", "portsDown", "tunnelsDown", "flowErrors")


def marker(rt: Runtime) -> str:
    """Masters, epochs, connections and what is down (not the flow counts' every move)."""
    view = [{k: s.get(k) for k in (*MARKED, "alarms")} for s in rt.sdn.view()]
    instances = {
        name: (doc.get("serving"), sorted((d, s.get("role")) for d, s in doc["switches"].items()))
        for name, doc in rt.sdn.instances().items()
        if isinstance(doc.get("switches"), dict)
    }
    text = json.dumps([view, instances], sort_keys=True, default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


async def page(rt: Runtime, params: dict[str, str]) -> dict[str, Any]:
    q = params.get("q", "").strip().lower()[:100]
    switches = [
        s for s in rt.sdn.view() if not q or q in s["host"].lower() or q in (s["master"] or "")
    ]
    instances = []
    for name, doc in sorted(rt.sdn.instances().items()):
        links = doc.get("switches", {})
        instances.append(
            {
                "name": name,
                "host": doc.get("host"),
                "model": doc.get("model"),
                "serving": bool(doc.get("serving")),
                "masters": sorted(d for d, s in links.items() if s.get("role") == "master"),
                "connected": len(links),
                "cutOff": doc.get("cutOff") or [],
            }
        )
    return {
        "switches": switches,
        "instances": instances,
        "networks": len(rt.sdn.networks()),
        "ports": len(rt.sdn.ports()),
        "q": q,
        "troubled": sum(
            1 for s in switches if not s["master"] or s["portsDown"] or s["tunnelsDown"]
        ),
    }
