"""The send activity against a real database: one outbox row per idempotency key."""

import asyncio
import uuid

from temporalio.testing import ActivityEnvironment

import httpx

from followthrough.activities.delivery import DeliveryActivities
from followthrough.domain.contracts import Draft, SendRequest
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from tests.helpers import outbox_rows


def _request(task_id: str) -> SendRequest:
    return SendRequest(task_id=task_id, task_type="invoice_follow_up", tenant_id="t",
                       draft=Draft(channel="email", subject="Hello", body="Body", to=["a@example.com"]),
                       idempotency_key=f"{task_id}:send")


async def test_repeated_and_concurrent_sends_deliver_once(engine):
    async with httpx.AsyncClient() as http:
        await _send_five(engine, http)


async def _send_five(engine, http):
    send = DeliveryActivities(Settings(), engine, http, SecretStore()).send
    task_id = str(uuid.uuid4())
    env = ActivityEnvironment()
    results = await asyncio.gather(*[env.run(send, _request(task_id)) for _ in range(5)])
    assert len({r.delivery_id for r in results}) == 1 and results[0].channel == "email"
    assert sorted(r.duplicate for r in results) == [False, True, True, True, True]
    [row] = await outbox_rows(engine, task_id)
    assert (row.subject, row.recipients, row.status) == ("Hello", ["a@example.com"], "queued")
    assert results[0].detail["recipients"] == ["a@example.com"]
