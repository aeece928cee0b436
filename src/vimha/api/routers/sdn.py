"""The SDN controller's northbound (issue 18, SDN-3): network and port intents, accepted by
any controller and stored once (every SDN instance watches them; each switch's master
programs them), and the switches as the SDN instances see them (SDN-4)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field

from vimha.api import auth
from vimha.api.deps import runtime
from vimha.engine.runtime import Runtime

router = APIRouter(prefix="/vim/v1/sdn", tags=["sdn"])


class NetworkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=64)
    vni: int | None = Field(None, ge=1, le=16777215, description="Default: the lowest free")


class PortRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    networkId: str = Field(min_length=1, description="The network's id or name")
    host: str = Field(min_length=1, description="The compute node the port is on")
    mac: str = Field(min_length=17, max_length=17)
    ip: str = Field(min_length=7, max_length=15)
    device: str | None = Field(None, description="Its interface on the host's switch")


@router.get("/switches", summary="Switches: connected instances, master, epoch, ports, flows")
async def switches(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, Any]]:
    return rt.sdn.view()


@router.get("/instances", summary="SDN controller instances as they publish themselves")
async def instances(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, dict[str, Any]]:
    return rt.sdn.instances()


@router.get("/networks", summary="Network intents")
async def list_networks(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, object]]:
    return [n.as_dict() for n in rt.sdn.networks()]


@router.post("/networks", status_code=201, summary="Create a network (a VXLAN segment)")
async def create_network(
    body: NetworkRequest, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> dict[str, object]:
    return (await rt.sdn.create_network(body.name, body.vni)).as_dict()


@router.get("/networks/{ref}", summary="One network, by id or name")
async def get_network(
    ref: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, object]:
    return rt.sdn.network(ref).as_dict()


@router.delete("/networks/{ref}", status_code=204, summary="Delete a network without ports")
async def delete_network(
    ref: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    await rt.sdn.delete_network(ref)
    return Response(status_code=204)


@router.get("/ports", summary="Port intents")
async def list_ports(
    rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> list[dict[str, object]]:
    return [p.as_dict() for p in rt.sdn.ports()]


@router.post("/ports", status_code=201, summary="Create a port: its MAC and IP known now")
async def create_port(
    body: PortRequest, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> dict[str, object]:
    port = await rt.sdn.create_port(body.networkId, body.host, body.mac, body.ip, body.device)
    return port.as_dict()


@router.get("/ports/{port_id}", summary="One port")
async def get_port(
    port_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.reader
) -> dict[str, object]:
    return rt.sdn.port(port_id).as_dict()


@router.delete("/ports/{port_id}", status_code=204, summary="Delete a port")
async def delete_port(
    port_id: str, rt: Runtime = Depends(runtime), _: auth.Principal = auth.operator
) -> Response:
    await rt.sdn.delete_port(port_id)
    return Response(status_code=204)
