"""What an outbound HTTP request a task or an agent's tool describes may hold: its URL's form, and the headers it
may not set itself. Pure checks, shared by the http_request type, connectors, the webhook and browser types and
the agent's tools (which the workflow checks)."""

from urllib.parse import urlsplit

from followthrough.domain.credentials import HOW_TO_REFERENCE

# Request headers that carry credentials: they belong in `auth`, backed by a secret.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "x-api-key", "api-key"})
# Headers the HTTP client derives from the URL and body. `Host` above all: a secret's host binding and the
# allowed hosts check the URL's host, and a front shared by many sites routes by this header instead.
TRANSPORT_HEADERS = frozenset({
    "host", ":authority", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer",
    "upgrade", "proxy-connection",
})


def header_refusal(name: str) -> str | None:
    """Why a request may not set header ``name`` itself (credential headers aside), or None."""
    lowered = name.lower()
    if lowered in TRANSPORT_HEADERS:
        return f"header {name!r} is set by the HTTP client from the URL and body, never by a request"
    if lowered == "idempotency-key":
        return "Idempotency-Key is set by followthrough (stable across retries)"
    return None


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    if parts.username or parts.password:
        raise ValueError(f"credentials in the URL are not accepted: {HOW_TO_REFERENCE}")
    return value
