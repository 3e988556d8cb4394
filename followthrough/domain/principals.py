"""Who is calling: API keys, the roles they carry, and the principal a request acts as.

A key reads ``ftk_<key id>_<secret>``. Only a SHA-256 of the secret is stored;
the secret is shown once, when the key is made. Secrets are 32 random bytes,
so a plain hash (no slow KDF) is enough: there is nothing to brute-force.
"""

import hashlib
import ipaddress
import hmac
import re
import secrets
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    """The roles that open the API. A key may also carry team roles of any
    other name (``finance``, ``legal``) that approvals can name as deciders."""

    VIEWER = "viewer"        # read tasks, events, approvals
    SUBMITTER = "submitter"  # create, cancel and retry tasks
    APPROVER = "approver"    # decide tasks (approve, reject, mark done)
    ADMIN = "admin"          # everything in its tenant, including subscriptions
    # Decrypt and encrypt through /codec: the codec keys are global (every tenant's payloads), so this is an
    # operator's role, which no other role implies (not even admin, whose reach is one tenant).
    CODEC = "codec"


# What each role may do, as the roles it implies.
_IMPLIES: dict[Role, frozenset[Role]] = {
    Role.VIEWER: frozenset({Role.VIEWER}),
    Role.SUBMITTER: frozenset({Role.VIEWER, Role.SUBMITTER}),
    Role.APPROVER: frozenset({Role.VIEWER, Role.APPROVER}),
    Role.ADMIN: frozenset(Role) - {Role.CODEC},
    Role.CODEC: frozenset({Role.CODEC}),
}

_NAMES = frozenset(r.value for r in Role)
ROLE_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
KEY_PREFIX = "ftk"
_KEY = re.compile(rf"^{KEY_PREFIX}_([A-Za-z0-9]{{12}})_([A-Za-z0-9_-]{{43}})$")


@dataclass(frozen=True)
class Principal:
    # The tenant whose objects it may see and touch; None: every tenant (anonymous access, dev only).
    tenant_id: str | None
    actor_id: str
    roles: frozenset[str] = field(default_factory=frozenset)
    key_id: str | None = None

    @property
    def anonymous(self) -> bool:
        return self.key_id is None

    def grants(self, role: Role) -> bool:
        return any(role in _IMPLIES[Role(r)] for r in self.roles if r in _NAMES)


def anonymous(actor_id: str | None, team_roles: list[str] | None = None) -> Principal:
    """The caller of a server run with anonymous access (dev, on 127.0.0.1): every API role in
    every tenant, named by X-Actor-Id, with the team roles X-Actor-Roles claims."""
    return Principal(tenant_id=None, actor_id=actor_id or "anonymous",
                     roles=frozenset(Role) | frozenset(team_roles or []))


@dataclass(frozen=True)
class MintedKey:
    key_id: str
    token: str       # shown once
    secret_hash: str


def mint() -> MintedKey:
    key_id = "".join(secrets.choice("abcdefghijkmnpqrstuvwxyz23456789") for _ in range(12))
    secret = secrets.token_urlsafe(32)
    return MintedKey(key_id=key_id, token=f"{KEY_PREFIX}_{key_id}_{secret}", secret_hash=hash_secret(secret))


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _KEY.match(token.strip())
    return (match.group(1), match.group(2)) if match else None


def matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


ANONYMOUS_WARNING = ("*** ANONYMOUS ACCESS: the API accepts calls without an API key, as whoever X-Actor-Id names, "
                     "with every role. Local use only. ***")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
