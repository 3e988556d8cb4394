"""Sending: deliver a task's (approved) draft through its channel's transport,
exactly once per idempotency key."""

from datetime import timedelta

import httpx
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from followthrough.activities.attempts import record_failed_attempt
from followthrough.activities.errors import permanent, reports_attempt
from followthrough.activities.heartbeat import heartbeating
from followthrough.activities.transports import (DeliveryContext, PermanentDeliveryError, Transport, build_transports,
                                   unserved_channels)
from followthrough.domain import activity_names, policies
from followthrough.domain.contracts import SendRequest, SendResult
from followthrough.infra.secrets import SecretNotFound, SecretStore
from followthrough.config.settings import Settings
from followthrough.infra.task_secrets import task_secrets_for


def database_unavailable(err: BaseException) -> bool:
    """Whether a failure was the database going away (not the receiver, not the request)."""
    if isinstance(err, DBAPIError):
        return err.connection_invalidated or isinstance(err, (OperationalError, InterfaceError))
    # Failing to connect at all surfaces as the driver's own OSError (asyncpg), not wrapped.
    return isinstance(err, (ConnectionRefusedError, ConnectionResetError)) or \
        type(err).__module__.startswith("asyncpg")


class DeliveryActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine, http: httpx.AsyncClient, secrets: SecretStore,
                 transports: dict[str, Transport] | None = None) -> None:
        self._settings, self._engine, self._http, self._secrets = settings, engine, http, secrets
        self._task_secrets = task_secrets_for(settings)
        self._transports = transports or build_transports()

    @activity.defn(name=activity_names.SEND)
    @reports_attempt
    async def send(self, request: SendRequest) -> SendResult:
        transport = self._transports.get(request.draft.channel)
        if transport is None:
            if reason := unserved_channels().get(request.draft.channel):
                raise permanent(f"this worker cannot deliver {request.draft.channel} drafts: {reason}",
                                policies.PART_MISSING)
            raise permanent(f"no transport for channel {request.draft.channel!r}", policies.DELIVERY_REFUSED)
        info = activity.info()
        timeout = info.start_to_close_timeout or timedelta(seconds=30)
        ctx = DeliveryContext(
            settings=self._settings, engine=self._engine, http=self._http, secrets=self._secrets,
            task_secrets=self._task_secrets,
            task_id=request.task_id, task_type=request.task_type, tenant_id=request.tenant_id,
            idempotency_key=request.idempotency_key, attempt=info.attempt,
            # Leave the activity a moment to record the outcome before Temporal's own timeout.
            timeout_seconds=max(1.0, timeout.total_seconds() - 2),
        )
        try:
            # A delivery that has begun finishes even when its task is cancelled meanwhile.
            detail = await heartbeating(transport.deliver(request.draft, ctx), finish_on_cancel=True)
        except (PermanentDeliveryError, SecretNotFound) as err:
            error_type = getattr(err, "error_type", policies.DELIVERY_REFUSED)
            await record_failed_attempt(self._engine, request.task_id, request.run_number, "send", err, False)
            raise permanent(str(err), error_type) from err
        except Exception as err:
            await record_failed_attempt(self._engine, request.task_id, request.run_number, "send", err, True)
            if database_unavailable(err):
                raise ApplicationError(f"the database is unavailable: {err}"[:1000],
                                       type=policies.DATABASE_UNAVAILABLE) from err
            raise
        return SendResult(delivery_id=str(detail.get("message_id") or detail.get("delivery_id") or ""),
                          channel=transport.channel, attempt=info.attempt,
                          duplicate=bool(detail.get("duplicate")), detail=detail)
