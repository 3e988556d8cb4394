"""The caller: an API key (``Authorization: Bearer <key>`` or ``X-API-Key``), or,
on a server run with anonymous access, whoever ``X-Actor-Id`` names.

Routes declare the API role they need with ``dependencies=[require(Role.X)]``.
"""

from typing import Annotated

from fastapi import Depends, Header, Request

from followthrough.api.errors import ApiError
from followthrough.db.api_keys import principal_for
from followthrough.domain.principals import ROLE_NAME, Principal, Role, anonymous

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def get_principal(
    request: Request,
    authorization: Annotated[str | None, Header(max_length=512)] = None,
    x_api_key: Annotated[str | None, Header(max_length=512)] = None,
    x_actor_id: Annotated[str | None, Header(max_length=128)] = None,
    x_actor_roles: Annotated[str | None, Header(max_length=1024)] = None,
) -> Principal:
    known = getattr(request.state, "principal", None)  # the tenant guard may have found it already
    if known is not None:
        return known
    request.state.principal = await _principal(request, authorization, x_api_key, x_actor_id, x_actor_roles)
    return request.state.principal


async def principal_of(request: Request) -> Principal:
    """The caller, outside FastAPI's dependency injection (the tenant guard)."""
    headers = request.headers
    return await get_principal(request, headers.get("authorization"), headers.get("x-api-key"),
                               headers.get("x-actor-id"), headers.get("x-actor-roles"))


async def _principal(request: Request, authorization: str | None, x_api_key: str | None, x_actor_id: str | None,
                     x_actor_roles: str | None) -> Principal:
    # Never a cookie: the inbox's session cookie is good under /ui only (followthrough/api/routes/inbox.py), so no page
    # of another site can make a browser call this API as the person signed in.
    token = x_api_key or _bearer(authorization)
    if token:
        async with request.app.state.engine.connect() as conn:
            principal = await principal_for(conn, token)
        if principal is None:
            raise ApiError(401, "the API key is not valid or has been revoked", headers=_CHALLENGE)
        return principal
    if request.app.state.settings.anonymous_access:
        roles = [r.strip() for r in (x_actor_roles or "").split(",") if r.strip()]
        if any(not ROLE_NAME.match(r) for r in roles):
            raise ApiError(422, "X-Actor-Roles is a comma-separated list of lower-case role names")
        return anonymous(x_actor_id, roles)
    raise ApiError(401, "an API key is required: send it as 'Authorization: Bearer <key>'", headers=_CHALLENGE)


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "send the API key as 'Authorization: Bearer <key>'", headers=_CHALLENGE)
    return value.strip()


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def demand(principal: Principal, role: Role) -> None:
    if not principal.grants(role):
        raise ApiError(403, f"this needs the {role.value} role; the key has {', '.join(sorted(principal.roles))}")


def require(role: Role):  # noqa: ANN201 - a FastAPI dependency
    async def check(principal: PrincipalDep) -> Principal:
        demand(principal, role)
        return principal
    return Depends(check)


def acting_as(principal: Principal, named: str | None) -> str:
    """Who a decision is recorded for. A key decides as its own user; only anonymous
    access (dev) may name someone else in the body."""
    if named is None or named == principal.actor_id or principal.anonymous:
        return named or principal.actor_id
    raise ApiError(403, f"this key acts as {principal.actor_id!r}; it cannot decide as {named!r}")
