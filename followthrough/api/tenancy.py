"""Tenant isolation: a key sees and touches its own tenant's objects only.

Every route with a task, definition, subscription or artifact id in its path passes the
guard below first (it is an app-wide dependency, so it runs before a body is
even validated): an object of another tenant is answered exactly like one that
does not exist, 404, so ids leak nothing. Lists and bulk selections narrow
themselves with ``listing_tenant``; new objects take the key's tenant (``tenant_for``).
Anonymous access (dev) spans every tenant.
"""

from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import Table, select

from followthrough.api.auth import principal_of
from followthrough.api.errors import ApiError, not_found
from followthrough.domain.principals import Principal
from followthrough.db.tables import Subscription, Task, TaskArtifact, TaskDefinition

# Path parameter → (what it names, its table).
_OWNED: dict[str, tuple[str, Table]] = {
    "task_id": ("task", Task.__table__),  # type: ignore[attr-defined]
    "definition_id": ("definition", TaskDefinition.__table__),  # type: ignore[attr-defined]
    "subscription_id": ("subscription", Subscription.__table__),  # type: ignore[attr-defined]
    "artifact_id": ("artifact", TaskArtifact.__table__),  # type: ignore[attr-defined]
}


async def tenant_guard(request: Request) -> None:
    params = {name: value for name, value in request.path_params.items() if name in _OWNED}
    if not params or request.url.path.startswith("/ui"):  # the inbox page answers in HTML itself
        return
    principal = await principal_of(request)
    if principal.tenant_id is None:
        return
    async with request.app.state.engine.connect() as conn:
        for name, value in params.items():
            what, table = _OWNED[name]
            owner = (await conn.execute(select(table.c.tenant_id).where(table.c.id == value))).scalar() \
                if len(value) <= 36 else None
            if owner != principal.tenant_id:
                raise not_found(what, value)


def tenant_for(principal: Principal, body: BaseModel) -> str:
    """The tenant a new object belongs to: the key's. Naming another in the body is a 403."""
    named: str = body.tenant_id  # type: ignore[attr-defined]
    if principal.tenant_id is None:
        return named
    if "tenant_id" in body.model_fields_set and named != principal.tenant_id:
        raise ApiError(403, f"this key belongs to tenant {principal.tenant_id!r}; it cannot act in {named!r}")
    return principal.tenant_id


def listing_tenant(principal: Principal, asked: str | None) -> str | None:
    """The tenant a list or bulk selection is narrowed to: the key's (asking for another is a 403)."""
    if principal.tenant_id is None or asked in (None, principal.tenant_id):
        return asked if principal.tenant_id is None else principal.tenant_id
    raise ApiError(403, f"this key belongs to tenant {principal.tenant_id!r}; it cannot list {asked!r}")
