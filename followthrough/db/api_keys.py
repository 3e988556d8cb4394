"""API keys in the mirror database: make one, list them, revoke one, and find the principal behind a key."""

from datetime import datetime, timezone

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from followthrough.domain import approver_ids
from followthrough.domain.principals import ROLE_NAME, MintedKey, Principal, Role, matches, mint, parse
from followthrough.db.tables import ApiKey

KEYS: Table = ApiKey.__table__  # type: ignore[attr-defined]


class KeyError_(ValueError):
    """A key request that cannot be carried out; the message says why."""


def check_roles(roles: list[str]) -> list[str]:
    """At least one API role (viewer, submitter, approver, admin); team roles are lower-case names."""
    api_roles = {r.value for r in Role}
    if not api_roles & set(roles):
        raise KeyError_(f"a key needs at least one of the roles {', '.join(sorted(api_roles))}")
    bad = [r for r in roles if not ROLE_NAME.match(r)]
    if bad:
        raise KeyError_(f"role names are lower-case letters, digits, '.', '_' or '-': {', '.join(bad)}")
    return sorted(set(roles))


async def create(engine: AsyncEngine, *, tenant_id: str, actor_id: str, name: str,
                 roles: list[str]) -> tuple[dict, str]:
    """Store a new key; answer its row and the key itself, which is never shown again."""
    if not tenant_id or not actor_id:
        raise KeyError_("a key needs a tenant and the user it acts as")
    if (why := approver_ids.problem(actor_id)) is not None:  # its user decides and has a queue
        raise KeyError_(why)
    minted: MintedKey = mint()
    row = {"id": minted.key_id, "tenant_id": tenant_id, "actor_id": actor_id, "name": name or actor_id,
           "roles": check_roles(roles), "secret_hash": minted.secret_hash,
           "created_at": datetime.now(timezone.utc), "revoked_at": None}
    async with engine.begin() as conn:
        await conn.execute(KEYS.insert().values(**row))
    return _public(row), minted.token


async def listed(engine: AsyncEngine, tenant_id: str | None = None) -> list[dict]:
    query = select(KEYS).order_by(KEYS.c.tenant_id, KEYS.c.created_at)
    if tenant_id is not None:
        query = query.where(KEYS.c.tenant_id == tenant_id)
    async with engine.connect() as conn:
        return [_public(dict(r._mapping)) for r in await conn.execute(query)]


async def revoke(engine: AsyncEngine, key_id: str) -> bool:
    """True when the key existed and was live; revoking is final."""
    async with engine.begin() as conn:
        done = await conn.execute(update(KEYS).where(KEYS.c.id == key_id, KEYS.c.revoked_at.is_(None))
                                  .values(revoked_at=datetime.now(timezone.utc)))
        return bool(done.rowcount)


async def principal_for(conn: AsyncConnection, token: str) -> Principal | None:
    """The principal a presented key stands for; None for a malformed, unknown, wrong or revoked key."""
    parsed = parse(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    row = (await conn.execute(select(KEYS).where(KEYS.c.id == key_id))).first()
    if row is None or row.revoked_at is not None or not matches(secret, row.secret_hash):
        return None
    return Principal(tenant_id=row.tenant_id, actor_id=row.actor_id, roles=frozenset(row.roles), key_id=row.id)


async def principal_by_id(conn: AsyncConnection, key_id: str) -> Principal | None:
    """The principal of a live key known by its id (an inbox session names its key so)."""
    row = (await conn.execute(select(KEYS).where(KEYS.c.id == key_id))).first()
    if row is None or row.revoked_at is not None:
        return None
    return Principal(tenant_id=row.tenant_id, actor_id=row.actor_id, roles=frozenset(row.roles), key_id=row.id)


async def is_live(engine: AsyncEngine, key_id: str) -> bool:
    """Whether the key still exists unrevoked (an open stream asks this now and then)."""
    async with engine.connect() as conn:
        row = (await conn.execute(select(KEYS.c.revoked_at).where(KEYS.c.id == key_id))).first()
    return row is not None and row.revoked_at is None


def _public(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "secret_hash"}
