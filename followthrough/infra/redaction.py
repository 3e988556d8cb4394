"""Keeping secret values out of every error text, log line and stored result.

Each secret store hands its values to ``remember`` as it resolves them; ``redact`` replaces every value this
process has resolved (and the escaped forms an exception's text shows it in: ``repr`` of the string or of its
bytes, JSON) with ``[redacted]``. It is applied where an error becomes text someone can read: the activity's
ApplicationError and its causes (followthrough/activities/errors.py), the failed-attempt event, a delivery's recorded
failure, agent tool answers and the worker's log lines. One registry for the process, so a value is redacted
wherever it turns up, whichever transport or library put it there.
"""

import json
import threading
from urllib.parse import quote, quote_plus

REDACTED = "[redacted]"
# Shorter values would blank out ordinary words of every message; secrets that short are refused nowhere
# but protect nothing either.
MIN_LENGTH = 4

_lock = threading.Lock()
_forms: set[str] = set()
_ordered: tuple[str, ...] = ()


def _variants(value: str) -> set[str]:
    forms = {value, repr(value)[1:-1], json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             # As a URL carries it: a query string written by a form, a path.
             quote(value, safe=""), quote_plus(value), quote(value)}
    try:
        forms.add(repr(value.encode())[2:-1])
    except UnicodeEncodeError:
        pass
    # Without surrounding whitespace too: a trailing newline is often what made a library refuse the value.
    stripped = value.strip()
    if stripped != value and len(stripped) >= MIN_LENGTH:
        forms |= _variants(stripped)
    return {f for f in forms if len(f) >= MIN_LENGTH}


def remember(value: str) -> str:
    """Mark ``value`` as secret for the rest of this process; returns it."""
    global _ordered
    if isinstance(value, str) and len(value) >= MIN_LENGTH and value not in _forms:
        with _lock:
            _forms.update(_variants(value))
            # Longest first, so a value containing another is replaced whole.
            _ordered = tuple(sorted(_forms, key=len, reverse=True))
    return value


def redact(text: str) -> str:
    for form in _ordered:
        if form in text:
            text = text.replace(form, REDACTED)
    return text


def redact_tree(value):
    """``redact`` applied to every string of a JSON-like value (a delivery's detail, an event's data)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_tree(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v) for v in value]
    return value
