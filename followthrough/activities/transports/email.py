"""Email: into the outbox table, and over SMTP when a host is configured.

Exactly once per idempotency key: the outbox row is written ("sending") and
committed before the SMTP conversation, and marked "sent" once the server
accepts. A retry that finds "sent" does not send again; one that finds
"sending" (the previous attempt died mid-send) sends again with the same
Message-ID, so a receiver that saw the first copy can recognise the second.
"""

import hashlib
import uuid
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

import aiosmtplib
from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from followthrough.activities.transports.base import DeliveryContext, PermanentDeliveryError
from followthrough.infra import tracing
from followthrough.domain.contracts import Draft
from followthrough.db.mirror import insert_ignoring_duplicates
from followthrough.db.tables import Contact, OutboxMessage

OUTBOX: Table = OutboxMessage.__table__  # type: ignore[attr-defined]
CONTACTS: Table = Contact.__table__  # type: ignore[attr-defined]


def message_id_for(idempotency_key: str) -> str:
    """The Message-ID header: the same for every attempt of one send."""
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]}@followthrough>"


class EmailTransport:
    channel = "email"

    async def deliver(self, draft: Draft, ctx: DeliveryContext) -> dict[str, Any]:
        if not draft.to:
            raise PermanentDeliveryError("the message has no recipients")
        cc = [str(a) for a in draft.data.get("cc") or []]
        recipients = list(draft.to) + cc
        smtp = bool(ctx.settings.smtp_host)
        now = datetime.now(timezone.utc)
        row = dict(id=str(uuid.uuid4()), idempotency_key=ctx.idempotency_key, task_id=ctx.task_id,
                   tenant_id=ctx.tenant_id, channel="email", recipients=recipients, subject=draft.subject,
                   body=draft.body, status="sending" if smtp else "queued", created_at=now, sent_at=None)
        # Committed before any SMTP traffic, so a crash leaves a "sending" row behind.
        async with ctx.engine.begin() as conn:
            inserted = await insert_ignoring_duplicates(conn, OUTBOX, [row])
            if inserted and ctx.contact:
                await _remember_contacts(conn, ctx.tenant_id, recipients, now)
            else:
                existing = (await conn.execute(select(OUTBOX.c.id, OUTBOX.c.status)
                                               .where(OUTBOX.c.idempotency_key == ctx.idempotency_key))).one()
        if not smtp:
            if not inserted:
                return {"message_id": existing.id, "status": existing.status, "duplicate": True,
                        "recipients": recipients}
            return {"message_id": row["id"], "status": "queued", "duplicate": False, "recipients": recipients}

        message_id = message_id_for(ctx.idempotency_key)
        outbox_id = row["id"] if inserted else existing.id
        result = {"message_id": message_id, "outbox_id": outbox_id, "recipients": recipients}
        # "sent" is final; "queued" was handed to the outbox before SMTP was configured.
        if not inserted and existing.status != "sending":
            return result | {"smtp_message_id": None, "status": existing.status, "duplicate": True}

        refused, reply = await _send(draft, cc, message_id, ctx)
        async with ctx.engine.begin() as conn:
            await conn.execute(update(OUTBOX).where(OUTBOX.c.idempotency_key == ctx.idempotency_key)
                               .values(status="sent", sent_at=datetime.now(timezone.utc)))
        result |= {"smtp_message_id": reply, "status": "sent", "duplicate": False}
        if refused:
            result["refused"] = refused
        return result


async def _send(draft: Draft, cc: list[str], message_id: str, ctx: DeliveryContext) -> tuple[dict[str, str], str]:
    """One SMTP conversation; 5xx is permanent, everything else is left to Temporal's retries."""
    settings = ctx.settings
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = ", ".join(draft.to)
    if cc:
        message["Cc"] = ", ".join(cc)
    # A header cannot hold line breaks (a variable or an approver's edit may bring some).
    message["Subject"] = " ".join(draft.subject.split())
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(datetime.now(timezone.utc))
    # A draft may say its body is HTML (the report type does); everything else is plain text.
    message.set_content(draft.body, subtype="html" if draft.data.get("format") == "html" else "plain")
    if settings.smtp_username and not settings.smtp_password_secret:
        raise PermanentDeliveryError("FOLLOWTHROUGH_SMTP_USERNAME is set without FOLLOWTHROUGH_SMTP_PASSWORD_SECRET")
    password = ctx.secrets.get(settings.smtp_password_secret) if settings.smtp_username else None
    try:
        # No instrumentation covers aiosmtplib: a span of our own (tracing on), under the send activity's.
        with tracing.client_span(settings, "smtp send", **{"server.address": settings.smtp_host,
                                                            "server.port": settings.smtp_port}):
            refused, reply = await aiosmtplib.send(
                message, hostname=settings.smtp_host, port=settings.smtp_port,
                # Explicit False: no opportunistic upgrade unless configured.
                start_tls=settings.smtp_starttls,
                username=settings.smtp_username or None, password=password,
                timeout=min(settings.smtp_timeout_seconds, ctx.timeout_seconds))
    except aiosmtplib.SMTPRecipientsRefused as err:
        codes = [r.code for r in err.recipients]
        text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in err.recipients)
        # A temporary refusal (greylisting, a full mailbox) may succeed later.
        if all(code >= 500 for code in codes):
            raise PermanentDeliveryError(f"all recipients refused: {text}") from err
        raise
    except aiosmtplib.SMTPResponseException as err:
        if err.code >= 500:
            raise PermanentDeliveryError(f"SMTP server refused: {err.code} {err.message}") from err
        raise
    except aiosmtplib.SMTPNotSupported as err:
        # The server lacks what the settings ask for (STARTTLS, AUTH): a retry cannot fix it.
        raise PermanentDeliveryError(f"SMTP server does not support the configuration: {err}") from err
    return {addr: f"{r.code} {r.message}" for addr, r in refused.items()}, reply


async def _remember_contacts(conn: AsyncConnection, tenant_id: str, addresses: list[str], now: datetime) -> None:
    unique = sorted({a.lower() for a in addresses})
    await insert_ignoring_duplicates(conn, CONTACTS, [
        {"tenant_id": tenant_id, "address": a, "first_contacted_at": now} for a in unique])


TRANSPORT = EmailTransport()
