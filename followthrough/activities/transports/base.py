"""What every transport gets and may raise."""

from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.domain import policies
from followthrough.domain.contracts import Draft
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import TaskSecrets


class PermanentDeliveryError(Exception):
    """The receiver refused in a way no retry can change (a 4xx, an unknown mailbox, a missing secret)."""

    # The type of the non-retryable ApplicationError the activity raises for it.
    error_type = policies.DELIVERY_REFUSED


class SecretRefused(PermanentDeliveryError):
    """The task named a secret its tenant has not, or not for this host, or whose value cannot be sent."""

    error_type = policies.SECRET_REFUSED


class TargetRefused(PermanentDeliveryError):
    """The SSRF guard refused the target's address (followthrough/infra/outbound.py)."""

    error_type = policies.OUTBOUND_REFUSED


@dataclass(frozen=True)
class DeliveryContext:
    settings: Settings
    engine: AsyncEngine
    http: httpx.AsyncClient
    # The operator's secrets, for operator settings only (the SMTP password); never for a name a task gives.
    secrets: SecretStore
    task_id: str
    task_type: str
    tenant_id: str
    # Stable per task and step: the receiver-visible key (Message-ID, delivery
    # id, Idempotency-Key header) and the unique key of the delivery record.
    idempotency_key: str
    attempt: int
    timeout_seconds: float
    # What a task's payload or connector names (auth, signing, typed secrets): the task's tenant's, host-bound.
    task_secrets: TaskSecrets = field(default_factory=lambda: TaskSecrets(None))
    # Whether the recipients become known contacts of the tenant (the first-contact guardrail reads them).
    contact: bool = True

    def task_secret(self, name: str, host: str | None, *, header: bool = False) -> str:
        return self.task_secrets.resolve(self.tenant_id, name, host, header=header)


class Transport(Protocol):
    channel: str

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        """Deliver ``draft`` once per ``ctx.idempotency_key``; return what to record as the result."""
