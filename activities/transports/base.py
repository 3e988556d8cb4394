"""What every transport gets and may raise."""

from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough import policies
from followthrough.contracts import Draft
from followthrough.secrets import SecretStore
from followthrough.settings import Settings


class PermanentDeliveryError(Exception):
    """The receiver refused in a way no retry can change (a 4xx, an unknown mailbox, a missing secret)."""

    # The type of the non-retryable ApplicationError the activity raises for it.
    error_type = policies.DELIVERY_REFUSED


class TargetRefused(PermanentDeliveryError):
    """The SSRF guard refused the target's address (followthrough/outbound.py)."""

    error_type = policies.OUTBOUND_REFUSED


@dataclass(frozen=True)
class DeliveryContext:
    settings: Settings
    engine: AsyncEngine
    http: httpx.AsyncClient
    secrets: SecretStore
    task_id: str
    task_type: str
    tenant_id: str
    # Stable per task and step: the receiver-visible key (Message-ID, delivery
    # id, Idempotency-Key header) and the unique key of the delivery record.
    idempotency_key: str
    attempt: int
    timeout_seconds: float


class Transport(Protocol):
    channel: str

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        """Deliver ``draft`` once per ``ctx.idempotency_key``; return what to record as the result."""
