"""The /ui inbox's sign-in sessions, in the mirror database so any number of API processes share them.

The browser holds a random session id in a cookie; the table keeps only its SHA-256, the key it stands
for and when it ends. The session never carries the key itself, so the cookie is no API credential, and
the key's revocation ends the session at once (each request looks the key up). The CSRF token of a
session's forms is derived from its id: a page can show it, and it leads back to nothing.
"""

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta, timezone

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db import api_keys
from followthrough.domain.principals import Principal
from followthrough.db.tables import InboxSession

SESSIONS: Table = InboxSession.__table__  # type: ignore[attr-defined]
_MAX_ID = 128  # what a presented id may be at most; ours are 43 characters


def _hash(session_id: str) -> str:
    return hashlib.sha256(b"inbox-session\0" + session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The token every form of this session carries."""
    return hashlib.sha256(b"inbox-csrf\0" + session_id.encode()).hexdigest()


def same_token(expected: str | None, presented: str | None) -> bool:
    return bool(expected and presented) and hmac.compare_digest(expected.encode(), presented.encode())


async def create(engine: AsyncEngine, key_id: str, lifetime_seconds: int) -> str:
    """A new session for the key; answers its id, which only the browser keeps. Ended sessions go too."""
    session_id = secrets.token_urlsafe(32)
    now = datetime.now(timezone.utc)
    async with engine.begin() as conn:
        await conn.execute(delete(SESSIONS).where(SESSIONS.c.expires_at <= now))
        await conn.execute(SESSIONS.insert().values(id=_hash(session_id), key_id=key_id, created_at=now,
                                                    expires_at=now + timedelta(seconds=lifetime_seconds)))
    return session_id


async def principal_for(engine: AsyncEngine, session_id: str) -> Principal | None:
    """Who a presented session stands for; None when it is unknown, has ended, or its key was revoked."""
    if not session_id or len(session_id) > _MAX_ID:
        return None
    async with engine.connect() as conn:
        row = (await conn.execute(select(SESSIONS).where(SESSIONS.c.id == _hash(session_id)))).first()
        if row is None or row.expires_at <= datetime.now(timezone.utc):
            return None
        return await api_keys.principal_by_id(conn, row.key_id)


async def end(engine: AsyncEngine, session_id: str) -> None:
    """Sign-out: the session is deleted, so its cookie, replayed, signs nobody in."""
    if session_id and len(session_id) <= _MAX_ID:
        async with engine.begin() as conn:
            await conn.execute(delete(SESSIONS).where(SESSIONS.c.id == _hash(session_id)))
