"""Webhook signatures: HMAC-SHA256 over ``"<timestamp>.<body>"``.

The header is ``X-Followthrough-Signature: t=<unix seconds>,v1=<hex digest>``.
Signing the timestamp with the body lets a receiver refuse replays of an old
delivery; ``verify`` is what a receiver (and our tests) call.
"""

import hashlib
import hmac
import time

HEADER = "X-Followthrough-Signature"
SCHEME = "v1"


def _digest(secret: str, timestamp: int, body: bytes | str) -> str:
    raw = body.encode() if isinstance(body, str) else body
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> str:
    """The header value for ``body`` (exactly the bytes sent)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},{SCHEME}={_digest(secret, t, body)}"


def _parse(header: str) -> tuple[int | None, list[str]]:
    timestamp, signatures = None, []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:  # unix seconds; more digits are no time
            timestamp = int(value)
        elif name == SCHEME and value:
            # Several v1 entries are allowed so a sender can sign with an old and a new secret while rotating.
            signatures.append(value)
    return timestamp, signatures


def verify(secret: str, header: str | None, body: bytes | str, tolerance_seconds: int = 300,
           now: float | None = None) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_seconds`` old (or ahead)."""
    if not header:
        return False
    timestamp, signatures = _parse(header)
    if timestamp is None or not signatures:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body)
    # compare_digest takes the same time wherever the strings differ, so timing reveals nothing of the digest.
    return any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in signatures)
