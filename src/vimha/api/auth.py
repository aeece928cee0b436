"""Bearer tokens (or OpenStack's X-Auth-Token) with roles: reader < operator < admin."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from vimha.api.problems import ApiProblem

RANK = {"reader": 0, "operator": 1, "admin": 2}
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="vimha"'}

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
_header = APIKeyHeader(name="X-Auth-Token", auto_error=False, description="OpenStack style")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    role: str


class TokenAuth:
    def __init__(self, tokens: dict[str, Principal]) -> None:
        self._tokens = tokens

    def identify(self, token: str | None) -> Principal | None:
        if not token:
            return None
        for known, principal in self._tokens.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                return principal
        return None


def require(role: str) -> Callable[..., Principal]:
    """A dependency that admits callers with `role` or above."""

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
        if RANK[principal.role] < RANK[role]:
            raise ApiProblem(403, f"{principal.name} has role {principal.role}; needs {role}")
        return principal

    return check


reader = Depends(require("reader"))
operator = Depends(require("operator"))
admin = Depends(require("admin"))
