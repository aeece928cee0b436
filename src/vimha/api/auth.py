"""Bearer tokens (or OpenStack's X-Auth-Token) with roles: reader < operator < admin, and
`agent`: a node's agent, bound to its host, admitted only where an agent reports (its
services' status, events about its host and its parts, its declared services, what its host
should run and what its guests do, the images they need) and only for its own host: a
compromised node cannot speak for another, nor change the inventory.

A token is one of the configured ones, or one the OpenStack Identity face issued (stored
hashed with its expiry, valid on every controller: `engine/identity.py`). Every API
accepts both."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from vimha.api.problems import ApiProblem
from vimha.domain.identity import IssuedToken

RANK = {"agent": -1, "reader": 0, "operator": 1, "admin": 2}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vimha"'}

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, description="OpenStack style")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str
    host: str | None = None  # role agent: the host it speaks for


def own_host(principal: Principal, host: str) -> None:
    """An agent speaks for its own host only (others: any host their role allows)."""
    if principal.role == "agent" and principal.host != host:
        raise ApiProblem(403, f"{principal.name} speaks for host {principal.host} only, not {host}")


def own_objects(principal: Principal, objects: list[str]) -> None:
    """An agent's events are about its host or its parts (`<host>/...`) only."""
    if principal.role != "agent":
        return
    host = str(principal.host)
    for obj in objects:
        if obj != host and not obj.startswith(host + "/"):
            raise ApiProblem(
                403, f"{principal.name} reports about host {host} and its parts only, not {obj}"
            )


class IssuedTokens(Protocol):
    def validate(self, token: str) -> IssuedToken | None:
        """The live issued token (may read the store: not from the event loop)."""
        ...

    def cached(self, token: str) -> IssuedToken | bool | None:
        """What is known without the store; False: ask `validate`."""
        ...


class TokenAuth:
    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = tokens
        self._issued: IssuedTokens | None = None

    def accept_issued(self, issued: IssuedTokens) -> None:
        """Accept the tokens the Identity face issues too."""
        self._issued = issued

    def configured(self, token: str | None) -> Principal | None:
        """The principal of a configured token (never reads the store)."""
        if not token:
            return None
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        return None

    def identify(self, token: str | None) -> Principal | None:
        """Configured or issued; may read the store (call it from a worker thread)."""
        principal = self.configured(token)
        if principal is not None or not token or self._issued is None:
            return principal
        return _principal(self._issued.validate(token))

    async def aidentify(self, token: str | None) -> Principal | None:
        """`identify` for the event loop: the store is read in a thread, and only for an
        issued token not validated within the last seconds."""
        principal = self.configured(token)
        if principal is not None or not token or self._issued is None:
            return principal
        known = self._issued.cached(token)
        if known is not False:
            return _principal(known if isinstance(known, IssuedToken) else None)
        return _principal(await asyncio.to_thread(self._issued.validate, token))

    def password(self, user: str, password: str) -> Principal | None:
        """Identity's password method: a user's password is its configured token."""
        principal = self.configured(password)
        return principal if principal is not None and principal.name == user else None


def _principal(issued: IssuedToken | None) -> Principal | None:
    return None if issued is None else Principal(issued.user, issued.role)


def require(role: str, agents: bool = False) -> Callable[..., Principal]:
    """A dependency that admits callers with `role` or above, and agents when `agents` (the
    endpoint then checks the host they speak for: `own_host`, `own_objects`)."""

    def check(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Depends(_bearer),
        x_auth_token: str | None = Depends(_header),
    ) -> Principal:
        auth: TokenAuth = request.app.state.auth
        token = bearer.credentials if bearer else x_auth_token
        principal = auth.identify(token)
        if principal is None:
            detail = "a valid token is required" if token else "no token given"
            raise ApiProblem(
                401, detail + " (Authorization: Bearer ... or X-Auth-Token)", CHALLENGE
            )
        check_role(principal, role, agents)
        return principal

    return check


def check_role(principal: Principal, role: str, agents: bool = False) -> None:
    if principal.role == "agent" and agents:
        return
    if RANK[principal.role] < RANK[role]:
        raise ApiProblem(403, f"{principal.name} has role {principal.role}; needs {role}")


reader = Depends(require("reader"))
operator = Depends(require("operator"))
admin = Depends(require("admin"))
reporter = Depends(require("operator", agents=True))  # operators, and agents for their host
host_reader = Depends(require("reader", agents=True))  # readers, and agents for their host
