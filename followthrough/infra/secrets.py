"""The operator's named secrets (codec keys, the approval-link key, the SMTP password, the LLM key), resolved
only by operator code. Secrets a task may send live apart, per tenant: followthrough/infra/task_secrets.py.

Settings name a secret (``FOLLOWTHROUGH_SMTP_PASSWORD_SECRET=smtp``); the value never enters a
payload, a workflow history or the mirror. A secret ``smtp`` is read from
the environment variable ``FOLLOWTHROUGH_SECRET_SMTP``, or else from the
JSON object in the file named by ``FOLLOWTHROUGH_SECRETS_FILE``.
"""

import json
import os
import re
from pathlib import Path

from followthrough.infra import redaction
SECRET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")


class SecretNotFound(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name!r} is not configured (set FOLLOWTHROUGH_SECRET_"
                         f"{_env_suffix(name)} or add it to FOLLOWTHROUGH_SECRETS_FILE)")


def _env_suffix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


class SecretStore:
    def __init__(self, secrets_file: Path | None = None, environ: dict[str, str] | None = None) -> None:
        self._file = secrets_file
        self._environ = os.environ if environ is None else environ

    def get(self, name: str) -> str:
        value = self._environ.get(f"FOLLOWTHROUGH_SECRET_{_env_suffix(name)}")
        if value is not None:
            return redaction.remember(value)
        if self._file is not None and self._file.exists():
            stored = json.loads(self._file.read_text()).get(name)
            if isinstance(stored, str):
                return redaction.remember(stored)
        raise SecretNotFound(name)
