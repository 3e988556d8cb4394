"""POST /tasks/{id}/run over real HTTP (uvicorn on 127.0.0.1) on the real dev server: a task due in a day starts
at once, recorded as run now by whom; a second call, a paused task and a task not waiting for its due time are
409 with why."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import served_api
from tests.helpers import eventually, task_body, until_status


def _tomorrow() -> str:
    return (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()


async def test_a_task_due_tomorrow_runs_now_once(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path):
    async with served_api(dev_env, engine, tmp_path) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            stack = type("S", (), {"http": http})()
            created = await http.post("/tasks", json=task_body(due_at=_tomorrow()))
            assert created.status_code == 201, created.text
            task_id = created.json()["id"]
            await until_status(stack, task_id, "scheduled")

            ran = await http.post(f"/tasks/{task_id}/run", json={"reason": "customer asked"},
                                  headers={"X-Actor-Id": "olga"})
            assert ran.status_code == 200, ran.text
            assert ran.json()["id"] == task_id
            # Started at once, not in a day: drafted and waiting for its review.
            await until_status(stack, task_id, "awaiting_approval")
            events = (await http.get(f"/tasks/{task_id}/events")).json()["items"]
            moved = [e for e in events if e["type"] == "TASK_RESCHEDULED"]
            assert len(moved) == 1, moved
            assert moved[0]["actor_id"] == "olga" and moved[0]["data"]["run_now"] is True
            assert moved[0]["data"]["reason"] == "customer asked"

            again = await http.post(f"/tasks/{task_id}/run")
            assert again.status_code == 409, again.text
            assert "cannot run now" in again.text and "waiting for its due time" in again.text
            events = (await http.get(f"/tasks/{task_id}/events")).json()["items"]
            assert sum(e["type"] == "TASK_EXECUTION_STARTED" for e in events) <= 1
            assert sum(e["type"] == "TASK_DRAFTED" for e in events) == 1
            assert sum(e["type"] == "TASK_RESCHEDULED" for e in events) == 1

            # A paused task stays held: resume it first.
            paused_id = (await http.post("/tasks", json=task_body(due_at=_tomorrow()))).json()["id"]
            await until_status(stack, paused_id, "scheduled")
            assert (await http.post(f"/tasks/{paused_id}/pause")).status_code == 200
            refused = await http.post(f"/tasks/{paused_id}/run")
            assert refused.status_code == 409 and "paused" in refused.text, refused.text
            assert (await http.get(f"/tasks/{paused_id}")).json()["status"] == "paused"

            # A task with no due time, already started, is not waiting for one.
            now_id = (await http.post("/tasks", json=task_body())).json()["id"]
            await until_status(stack, now_id, "awaiting_approval")
            refused = await http.post(f"/tasks/{now_id}/run")
            assert refused.status_code == 409 and "waiting for its due time" in refused.text, refused.text
            assert (await http.post(f"/tasks/{task_id}/run", json={"everything": True})).status_code == 422
            assert (await http.post("/tasks/no-such-task/run")).status_code == 404
            for tid in (task_id, paused_id, now_id):
                await http.post(f"/tasks/{tid}/cancel")
            await eventually(lambda: http.get(f"/tasks/{paused_id}"), lambda r: r.json()["status"] == "cancelled")
