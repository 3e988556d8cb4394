"""A workflow start whose answer never comes (a deadline passed, the connection dropped): the API finds out
whether the task started before it answers, and never leaves room for a second task for the same subject."""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from followthrough.api.main import create_app
from followthrough.db.mirror import TASKS
from tests.conftest import make_settings
from tests.helpers import eventually, task_body
from followthrough.worker import build_worker


class LostAnswers:
    """A Temporal client whose next start (made or not) ends in an error, and whose describe may fail too."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self.start_then_fail: bool | None = None  # None: starts normally; True: starts, then fails; False: fails
        self.describe_fails = False

    async def start_workflow(self, *args: Any, **kwargs: Any) -> Any:
        mode, self.start_then_fail = self.start_then_fail, None
        if mode is None:
            return await self._client.start_workflow(*args, **kwargs)
        if mode:
            await self._client.start_workflow(*args, **kwargs)
        raise RPCError("context deadline exceeded", RPCStatusCode.DEADLINE_EXCEEDED, b"")

    def get_workflow_handle(self, *args: Any, **kwargs: Any) -> Any:
        handle = self._client.get_workflow_handle(*args, **kwargs)
        if self.describe_fails:
            async def describe(**_kwargs: Any) -> Any:
                raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
            handle.describe = describe
        return handle

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@asynccontextmanager
async def api(env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                                                                   LostAnswers]]:
    settings = make_settings(engine.url.render_as_string(hide_password=False), tmp_path)
    client = LostAnswers(env.client)
    app = create_app(settings, temporal=client)  # type: ignore[arg-type]
    async with build_worker(env.client, settings, engine), app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver/api/v1") as http:
            yield http, client


async def tasks_for(engine: AsyncEngine, subject: str) -> int:
    async with engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(TASKS)
                                   .where(TASKS.c.subject_ref_id == subject))).scalar_one()


async def test_a_start_whose_answer_was_lost_is_found_and_answered_201(dev_env, engine, tmp_path):
    async with api(dev_env, engine, tmp_path) as (http, client):
        body = task_body(mode="autonomous")
        client.start_then_fail = True
        created = await http.post("/tasks", json=body)
        assert created.status_code == 201, created.text
        await eventually(lambda: http.get(f"/tasks/{created.json()['id']}"),
                         lambda r: r.json()["status"] == "completed", timeout=30)
        assert (await http.post("/tasks", json=body)).status_code == 409
        assert await tasks_for(engine, body["subject_ref_id"]) == 1


async def test_a_start_that_did_not_happen_is_a_503_and_may_be_retried(dev_env, engine, tmp_path):
    async with api(dev_env, engine, tmp_path) as (http, client):
        body = task_body(mode="autonomous")
        client.start_then_fail = False
        refused = await http.post("/tasks", json=body)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5", refused.text
        assert "did not start" in refused.json()["detail"]
        assert (await http.post("/tasks", json=body)).status_code == 201  # the subject was released
        assert await tasks_for(engine, body["subject_ref_id"]) == 1


async def test_a_start_that_cannot_be_confirmed_keeps_the_subject_claimed(dev_env, engine, tmp_path):
    async with api(dev_env, engine, tmp_path) as (http, client):
        body = task_body(mode="autonomous")
        client.start_then_fail, client.describe_fails = True, True
        unsure = await http.post("/tasks", json=body)
        assert unsure.status_code == 503 and "may have started" in unsure.json()["detail"], unsure.text
        task_id = unsure.json()["task_id"]
        client.describe_fails = False
        # The workflow did start: it writes its own row, and a plain retry finds the subject taken by it.
        await eventually(lambda: http.get(f"/tasks/{task_id}"), lambda r: r.status_code == 200
                         and r.json()["status"] == "completed", timeout=30)
        again = await http.post("/tasks", json=body)
        assert again.status_code == 409 and again.json()["task_id"] == task_id, again.text
        assert await tasks_for(engine, body["subject_ref_id"]) == 1
        assert uuid.UUID(task_id)
