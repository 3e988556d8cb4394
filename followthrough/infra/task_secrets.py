"""Secrets a task may send: their own namespace, per tenant, each optionally bound to the hosts it may go to.

The operator's secrets (codec keys, the approval-link key, the SMTP password, the LLM key) stay in
followthrough/infra/secrets.py, which only operator code reads; nothing a task, a connector or an agent names is ever
looked up there. Task secrets come from the JSON file named by ``FOLLOWTHROUGH_TASK_SECRETS_FILE``::

    {"acme": {"crm_token": {"value": "sk-…", "hosts": ["api.crm.example", "*.crm.example"]},
              "signup_password": {"env": "ACME_SIGNUP_PASSWORD"},
              "hooks": "whsec-…"}}

An entry is its value, or an object with the value itself (``value``) or the name of an environment variable
holding it (``env``), and optionally ``hosts``: the only hosts it may be sent to (exact names, or ``*.suffix``
for the names under a domain; an empty list: none). Without ``hosts`` it may go anywhere the SSRF guard lets
the task reach. With ``env`` references the file holds no value, so the API process can read it to check that
a task names a secret its tenant has without holding any value.

The file is read at each use (it is small) and parsed again when it changed, so a secret can be added or
rotated without a restart.
"""

import functools
import json
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from followthrough.infra import redaction
from followthrough.domain import allowed_hosts

log = logging.getLogger("followthrough.infra.task_secrets")
LOG_SAYS = "the log line 'the task secrets file is invalid' of this process says where"
HOW_TO_ADD = ("an operator adds it for the tenant in the file named by FOLLOWTHROUGH_TASK_SECRETS_FILE, "
              "{\"<tenant>\": {\"<name>\": {\"value\": \"…\", \"hosts\": [\"<host>\"]}}} (docs/security.md: "
              "Task secrets)")
# What an HTTP header value may hold: visible ASCII and inner spaces (h11 refuses the rest, quoting the value).
_HEADER_SAFE = re.compile(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?")


def header_safe(value: str) -> bool:
    return _HEADER_SAFE.fullmatch(value) is not None


class TaskSecretError(LookupError):
    """A task named a secret it may not use here; retrying cannot change that."""


class TaskSecretUnavailable(TaskSecretError):
    """Not the tenant's, not for this host, or its environment variable is not set on this worker."""


class TaskSecretUnusable(TaskSecretError):
    """Its value cannot be sent where it is needed (empty, or a line break in a header value)."""


class TaskSecretsFileInvalid(ValueError):
    """The file is not the JSON it should be: an operator's error, answered 503 by the API."""


@dataclass(frozen=True)
class Entry:
    value: str | None = field(repr=False)  # never in a log line or a traceback's locals
    env: str | None
    hosts: tuple[str, ...] | None

    def allows(self, host: str | None) -> bool:
        if self.hosts is None:
            return True
        return bool(host) and allowed_hosts.allows(self.hosts, host)


def host_of(url: str | None) -> str | None:
    return (allowed_hosts.host_of(url) or None) if url else None


def unavailable(name: str, tenant: str, host: str | None) -> str:
    """One answer for a name that does not exist and one bound elsewhere: it tells nothing about which exist."""
    where = f" for host {host!r}" if host else ""
    return f"the task secret {name!r} is not available to tenant {tenant!r}{where}; {HOW_TO_ADD}"


def _entry(tenant: str, name: str, raw: object) -> Entry:
    where = f"task secret {name!r} of tenant {tenant!r}"
    if isinstance(raw, str):
        return Entry(raw, None, None)
    if not isinstance(raw, dict) or set(raw) - {"value", "env", "hosts", "description"} \
            or ("value" in raw) == ("env" in raw):
        raise TaskSecretsFileInvalid(f"{where}: give a string, or an object with `value` or `env` (one of "
                                     f"them) and optionally `hosts`")
    hosts = raw.get("hosts")
    if hosts is not None:
        if not isinstance(hosts, list):
            raise TaskSecretsFileInvalid(f"{where}: `hosts` is a list of host names")
        try:
            hosts = allowed_hosts.parse(hosts)
        except ValueError as err:
            raise TaskSecretsFileInvalid(f"{where}: `hosts`: {err}") from None
    value, env = raw.get("value"), raw.get("env")
    if not isinstance(value if env is None else env, str):
        raise TaskSecretsFileInvalid(f"{where}: `value` and `env` are strings")
    return Entry(value, env, None if hosts is None else tuple(hosts))


def task_secrets_for(settings) -> "TaskSecrets":
    """One store per file for the process, so its parsed contents are shared."""
    return _shared(settings.task_secrets_file)


class TaskSecrets:
    """The task-secrets file, read again when it changes; values only through ``resolve``."""

    def __init__(self, path: Path | None, environ: dict[str, str] | None = None) -> None:
        self._path = path
        self._environ = os.environ if environ is None else environ
        self._lock = threading.Lock()
        self._raw: bytes | None = None
        self._entries: dict[str, dict[str, Entry]] = {}

    def _load(self) -> dict[str, dict[str, Entry]]:
        """The entries; TaskSecretsFileInvalid in words that name no tenant and no secret, since they can
        end up in a task's error: the operator finds where the file is wrong in the log line."""
        try:
            return self._read()
        except TaskSecretsFileInvalid as err:
            log.error("the task secrets file is invalid: %s", err)
            raise TaskSecretsFileInvalid(f"the task secrets file is invalid; an operator must fix it ({LOG_SAYS})") \
                from None

    def _read(self) -> dict[str, dict[str, Entry]]:
        if self._path is None:
            return {}
        try:
            raw_bytes = self._path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise TaskSecretsFileInvalid(f"{self._path} cannot be read: {type(err).__name__}") from None
        with self._lock:
            if raw_bytes != self._raw:
                try:
                    raw = json.loads(raw_bytes)
                except ValueError as err:
                    raise TaskSecretsFileInvalid(f"{self._path} is not JSON: {type(err).__name__}") from None
                if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
                    raise TaskSecretsFileInvalid(f"{self._path}: expected {{\"<tenant>\": {{\"<name>\": …}}}}")
                self._entries = {t: {n: _entry(t, n, e) for n, e in names.items()} for t, names in raw.items()}
                self._raw = raw_bytes
            return self._entries

    def refusal(self, tenant: str, name: str, url: str | None = None) -> str | None:
        """Why a task of ``tenant`` may not use ``name`` (sent to ``url``, when known), or None: the API's
        early check, which reads no value."""
        entry = self._load().get(tenant, {}).get(name)
        host = host_of(url)
        if entry is None or (url is not None and not entry.allows(host)):
            return unavailable(name, tenant, host)
        return None

    def resolve(self, tenant: str, name: str, host: str | None, *, header: bool = False) -> str:
        """The value, for a request to ``host`` (the host it is actually sent to); ``header``: checked as an
        HTTP header value first. Raises TaskSecretError, whose message never holds the value."""
        entry = self._load().get(tenant, {}).get(name)
        if entry is None or not entry.allows(host):
            raise TaskSecretUnavailable(unavailable(name, tenant, host))
        value = entry.value if entry.env is None else self._environ.get(entry.env)
        if value is None:
            raise TaskSecretUnavailable(f"the task secret {name!r} of tenant {tenant!r} reads the environment "
                                        f"variable {entry.env}, which is not set on this worker")
        redaction.remember(value)
        if not value:
            raise TaskSecretUnusable(f"the task secret {name!r} of tenant {tenant!r} is empty")
        if len(value) < redaction.MIN_LENGTH:
            # Shorter values cannot be kept out of error texts and results (redaction.py) without blanking
            # ordinary words: one that short would show wherever a receiver echoes it.
            raise TaskSecretUnusable(f"the task secret {name!r} of tenant {tenant!r} is shorter than "
                                     f"{redaction.MIN_LENGTH} characters, too short to keep out of error texts")
        if header and not header_safe(value):
            raise TaskSecretUnusable(
                f"the task secret {name!r} of tenant {tenant!r} cannot be sent in an HTTP header: its value has "
                f"a line break, a control or non-ASCII character, or surrounding whitespace (often a trailing "
                f"newline from the file it was copied from); store the value without it")
        return value


@functools.lru_cache(maxsize=16)
def _shared(path: Path | None) -> TaskSecrets:
    return TaskSecrets(path)
