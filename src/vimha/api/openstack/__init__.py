"""The OpenStack faces of vimha (issue 16): Identity v3 at /identity, Compute v2.1 at
/compute/v2.1 (microversions 2.1 to 2.79), Image v2 at /image/v2, Network v2.0 at
/network/v2.0. They translate to the same engine calls as the native routers (one code
path, two vocabularies) and answer errors as OpenStack clients expect them. Not in the
OpenAPI document of the native API: docs/api.md describes them.
"""

from __future__ import annotations

from fastapi import FastAPI

from vimha.api.auth import TokenAuth
from vimha.api.openstack import (
    compute_catalog,
    compute_hosts,
    compute_servers,
    errors,
    identity,
    image,
    network,
    server_groups,
)
from vimha.api.openstack.microversions import Microversions
from vimha.engine.runtime import Runtime


def install(app: FastAPI, runtime: Runtime, token_auth: TokenAuth) -> None:
    token_auth.accept_issued(runtime.identity)
    app.state.error_faces = [*getattr(app.state, "error_faces", []), errors.render]
    for router in (
        identity.router,
        compute_catalog.root_router,
        compute_catalog.router,
        compute_servers.router,
        compute_hosts.router,
        server_groups.router,
        image.root_router,
        image.router,
        network.root_router,
        network.router,
    ):
        app.include_router(router)
    app.add_middleware(Microversions)
