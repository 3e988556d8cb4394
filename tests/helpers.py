"""Builders and small waits shared by the tests."""

import asyncio
import json
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.domain.contracts import TaskInput
from followthrough.db.database import session_factory
from followthrough.db.tables import OutboxMessage, Task, TaskEvent

T = TypeVar("T")


def invoice_payload(**overrides: Any) -> dict[str, Any]:
    return {
        "customer_name": "ACME Corp", "customer_email": "billing@acme.example", "invoice_number": "INV-123",
        "invoice_amount": 1200, "currency": "USD", "due_date": "2025-12-20", "days_overdue": 10,
    } | overrides


def task_body(**overrides: Any) -> dict[str, Any]:
    return {
        "type": "invoice_follow_up", "title": "Follow up on INV-123", "mode": "review",
        "subject_ref_type": "INVOICE", "subject_ref_id": f"INV-{uuid.uuid4().hex[:6]}",
        "source": "OVERDUE_INVOICE_DETECTOR", "payload": invoice_payload(),
    } | overrides


def task_input(mode: str = "review", *, created_at: datetime | None = None, **overrides: Any) -> TaskInput:
    fields: dict[str, Any] = dict(
        task_id=str(uuid.uuid4()), type="invoice_follow_up", title="Follow up on INV-123", mode=mode,
        payload=invoice_payload(), created_at=created_at or datetime.now(timezone.utc),
        approval_timeout_seconds=24 * 3600, tenant_id="wf-tests", subject_ref_id="INV-123",
    )
    return TaskInput(**(fields | overrides))


async def eventually(probe: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10) -> T:
    """Poll ``probe`` until ``check`` holds: the mirror trails the workflow by a write."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if check(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def task_row(engine: AsyncEngine, task_id: str) -> Task | None:
    async with session_factory(engine)() as session:
        return await session.get(Task, task_id)


async def event_types(engine: AsyncEngine, task_id: str) -> list[str]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(TaskEvent.type).where(TaskEvent.task_id == task_id)
                                     .order_by(TaskEvent.occurred_at, TaskEvent.seq))
        return list(rows.scalars())


async def outbox_rows(engine: AsyncEngine, task_id: str) -> list[OutboxMessage]:
    async with session_factory(engine)() as session:
        rows = await session.execute(select(OutboxMessage).where(OutboxMessage.task_id == task_id))
        return list(rows.scalars())


async def get_task(stack: Any, task_id: str) -> dict[str, Any]:
    """GET /tasks/{id} through a test stack's API client; the task must exist."""
    response = await stack.http.get(f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    return response.json()


async def until_status(stack: Any, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
    return await eventually(lambda: get_task(stack, task_id), lambda t: t["status"] == status, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_activities(activities: list, *replacements: Any) -> list:
    """``activities`` with each replacement standing in for the activity of the same name."""
    from temporalio.activity import _Definition

    names = {_Definition.must_from_callable(r).name for r in replacements}
    return [a for a in activities if _Definition.must_from_callable(a).name not in names] + list(replacements)


def add_task_secret(settings: Any, tenant: str, name: str, value: str | None = None, *,
                    hosts: list[str] | None = None, env: str | None = None) -> None:
    """Give ``tenant``'s tasks the secret ``name`` in the settings' task-secrets file (or the file given),
    bound to ``hosts``."""
    path = settings if isinstance(settings, Path) else settings.task_secrets_file
    assert path is not None, "these settings name no task secrets file"
    current = json.loads(path.read_text()) if path.exists() else {}
    entry: dict[str, Any] = {"value": value} if env is None else {"env": env}
    if hosts is not None:
        entry["hosts"] = hosts
    current.setdefault(tenant, {})[name] = entry
    path.write_text(json.dumps(current))


# ---- the /ui inbox's forms ----------------------------------------------------

def form_token(html: str) -> str:
    """The CSRF token an inbox page's forms carry."""
    import re
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the page carries no form token"
    return found.group(1)


async def sign_in(browser: Any, key: str, **headers: str) -> Any:
    """Sign in to the inbox as a browser does: open the sign-in page, post its form with the key."""
    page = await browser.get("/ui")
    return await browser.post("/ui/login", data={"key": key, "csrf": form_token(page.text)}, headers=headers)
