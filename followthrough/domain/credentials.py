"""Credentials never travel in payloads: payloads live in workflow histories and the mirror.

``raw_credentials`` finds fields whose names can only mean a credential was
pasted in, at any depth of a payload; the API refuses such a payload (422)
with ``HOW_TO_REFERENCE``. Types with credential-bearing parts (http_request's
``auth``) check their own fields more strictly.
"""

from typing import Any

# Names that mean a credential, whatever the type; kept narrow so ordinary data passes.
CREDENTIAL_NAMES = frozenset({
    "password", "passwd", "api_key", "apikey", "access_token", "refresh_token", "client_secret", "private_key",
    "secret_key", "secret_value", "bearer_token",
})
HOW_TO_REFERENCE = ("put the credential in a task secret of your tenant (an operator adds it, bound to the hosts it "
                    "may go to, in the file named by FOLLOWTHROUGH_TASK_SECRETS_FILE) and reference it "
                    "by name where the type takes one (e.g. \"auth\": {\"type\": \"bearer\", \"secret\": "
                    "\"crm_token\"}); payloads are kept in the task's history, so they must never hold a credential")
_MAX_DEPTH = 32


def raw_credentials(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The paths of credential-named fields in ``value`` (a JSON-like structure)."""
    if len(path) > _MAX_DEPTH:
        return []
    found: list[tuple[str | int, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.strip().lower().replace("-", "_") in CREDENTIAL_NAMES \
                    and item not in (None, "", {}, []):
                found.append((*path, key))
            else:
                found.extend(raw_credentials(item, (*path, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(raw_credentials(item, (*path, index)))
    return found
