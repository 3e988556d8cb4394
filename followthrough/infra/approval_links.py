"""Signed approval links: a token that lets one person take one decision on one approval request.

A token is ``base64url(json) + "." + base64url(hmac_sha256(key, json))``; the JSON
binds the task id, the approval request (``approval_id``: the id of its
TASK_APPROVAL_REQUESTED event, ``<run id>:<seq>``, so it names the run and the
wait within it), the approver, the decision (``approve`` or ``reject``), the
expiry in unix seconds and a random nonce. The approve and reject tokens of a
pair share their nonce, so using either spends both: whoever inserts it into
``approval_link_uses`` first used the pair (see the API). A token without an
``approval_id`` (minted before links named their request) is OutdatedToken.

The key is the secret named by ``FOLLOWTHROUGH_APPROVAL_LINK_SECRET``; without
one, a key generated once and kept in ``<data_dir>/approval-link.key`` (0600),
so ``followthrough dev`` works with no set-up. A link signed by one process
verifies only in processes with the same key: every API and worker of a
deployment (each container has its own data folder) must be given the secret.
"""

import base64
import binascii
import hashlib
import hmac
import json
from datetime import datetime, timezone
import secrets
import time
from dataclasses import asdict, dataclass

from followthrough.infra.key_files import generated_key
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings

DECISIONS = ("approve", "reject")
KEY_FILE = "approval-link.key"
_MAX_TOKEN = 4096


class InvalidToken(ValueError):
    """Malformed, or not signed with our key: nobody can tell what it was meant to say."""


class OutdatedToken(ValueError):
    """Genuine, but minted before links named the approval request they decide: it decides nothing."""


class ExpiredToken(ValueError):
    """Genuine, but past its expiry."""

    def __init__(self, link: "ApprovalLink") -> None:
        super().__init__("this approval link has expired")
        self.link = link


@dataclass(frozen=True)
class ApprovalLink:
    task_id: str
    approval_id: str
    approver: str
    decision: str
    expires_at: int
    nonce: str  # shared by the approve and reject tokens of one pair


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or not text.isascii():
        raise InvalidToken("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:
        raise InvalidToken("not base64url") from err


def _digest(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()


def signing_key(settings: Settings) -> bytes:
    """The key links are signed and checked with; SecretNotFound or ValueError when the secret named is
    missing or empty (an empty key would let anyone sign a link)."""
    if settings.approval_link_secret:
        value = SecretStore(settings.secrets_file).get(settings.approval_link_secret)
        if not value.strip():
            raise ValueError(f"the secret {settings.approval_link_secret!r} that signs approval links "
                             f"(FOLLOWTHROUGH_APPROVAL_LINK_SECRET) is empty")
        return value.encode()
    return generated_key(settings.data_dir / KEY_FILE)


def generated_key_warning(settings: Settings) -> str | None:
    """What an API or worker says at start when it signs links with its data folder's own key outside a dev
    setup (anonymous access off): other processes, with folders of their own, refuse its links."""
    if settings.approval_link_secret or settings.anonymous_access:
        return None
    return (f"approval links are signed with the key generated in {settings.data_dir / KEY_FILE}: a link made "
            f"here verifies only in processes that share that folder. With more than one API or worker process, "
            f"give them all one key: FOLLOWTHROUGH_APPROVAL_LINK_SECRET=link_1 and the key in "
            f"FOLLOWTHROUGH_SECRET_LINK_1 (or as \"link_1\" in the JSON file FOLLOWTHROUGH_SECRETS_FILE names). "
            f"docs/operations.md, \"Production\", \"First steps\"")


def mint(key: bytes, task_id: str, approver: str, decision: str, expires_at: int, *, approval_id: str,
         nonce: str | None = None) -> str:
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    if not approval_id:
        raise ValueError("a link needs the id of the approval request it decides")
    link = ApprovalLink(task_id=task_id, approval_id=approval_id, approver=approver, decision=decision,
                        expires_at=int(expires_at), nonce=nonce or secrets.token_urlsafe(18))
    body = json.dumps(asdict(link), separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64encode(body)}.{_b64encode(_digest(key, body))}"


def mint_pair(key: bytes, task_id: str, approval_id: str, approver: str, ttl_seconds: int,
              now: float | None = None) -> tuple[str, str, int]:
    """An approve and a reject token for ``approver`` on one approval request, with one nonce between them
    (using either spends both), and their common expiry."""
    expires_at = int(time.time() if now is None else now) + int(ttl_seconds)
    nonce = secrets.token_urlsafe(18)
    return (mint(key, task_id, approver, "approve", expires_at, approval_id=approval_id, nonce=nonce),
            mint(key, task_id, approver, "reject", expires_at, approval_id=approval_id, nonce=nonce), expires_at)


def links_for(settings: Settings, task_id: str, approval_id: str, approver: str,
              ttl_seconds: int | None = None) -> dict[str, str]:
    """An approver's approve and reject URLs for one approval request of a task, and when they expire."""
    approve, reject, expires_at = mint_pair(signing_key(settings), task_id, approval_id, approver,
                                            ttl_seconds or settings.approval_link_ttl_seconds)
    base = f"{settings.effective_public_url}/api/v1/approval-links"
    return {"approve": f"{base}/{approve}", "reject": f"{base}/{reject}",
            "expires_at": datetime.fromtimestamp(expires_at, timezone.utc).isoformat()}


def check(key: bytes, token: str, now: float | None = None) -> ApprovalLink:
    """The link ``token`` carries; InvalidToken when tampered or malformed, OutdatedToken when it names no
    approval request, ExpiredToken past its expiry."""
    if not token or len(token) > _MAX_TOKEN or token.count(".") != 1:
        raise InvalidToken("malformed approval link")
    body_part, signature_part = token.split(".")
    body, signature = _b64decode(body_part), _b64decode(signature_part)
    # compare_digest takes the same time wherever the values differ, so timing reveals nothing of the digest.
    if not hmac.compare_digest(_digest(key, body), signature):
        raise InvalidToken("the approval link's signature does not match")
    try:
        fields = json.loads(body)
    except ValueError as err:
        raise InvalidToken("malformed approval link") from err
    if isinstance(fields, dict) and not fields.get("approval_id"):
        raise OutdatedToken("this approval link was made before links named the request they decide")
    try:
        link = ApprovalLink(task_id=str(fields["task_id"]), approval_id=str(fields["approval_id"]),
                            approver=str(fields["approver"]), decision=str(fields["decision"]),
                            expires_at=int(fields["expires_at"]), nonce=str(fields["nonce"]))
    except (ValueError, TypeError, KeyError) as err:
        raise InvalidToken("malformed approval link") from err
    if link.decision not in DECISIONS:
        raise InvalidToken("malformed approval link")
    if (time.time() if now is None else now) >= link.expires_at:
        raise ExpiredToken(link)
    return link
