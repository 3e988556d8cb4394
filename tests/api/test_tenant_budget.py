"""A tenant's budget for starting tasks holds whoever starts them (the API, a schedule, a parent's listed
subtasks, the subtasks an LLM plans) and under concurrent requests; through the real API and worker, on every configured database."""

import asyncio
import uuid
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.services.definitions import DefinitionRunner
from tests.api.test_llm_drafting import llm  # noqa: F401 - fixture
from tests.conftest import running_stack
from tests.helpers import eventually, task_body, until_status
from tests.llm_server import FakeLlm


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


def email(**overrides: object) -> dict:
    return {"type": "email", "mode": "review",
            "payload": {"to": ["a@b.example"], "subject": "Hello", "body": "Hi"}} | overrides


def group(tenant_id: str, subtasks: list[dict]) -> dict:
    return {"type": "group", "mode": "review", "tenant_id": tenant_id, "payload": {"subtasks": subtasks}}


async def test_the_cap_on_tasks_in_flight_holds_under_concurrent_creates(
        dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path):
    # 50 creations at once is what it takes to show the count-then-create race; the 10 accepted are cheap
    # review tasks that wait for an approval.
    async with running_stack(dev_env, engine, tmp_path, max_tasks_in_flight=10) as stack:
        crowd = tenant()
        answers = await asyncio.gather(*(stack.http.post("/tasks", json=task_body(tenant_id=crowd))
                                         for _ in range(50)))
        codes = [a.status_code for a in answers]
        assert codes.count(201) == 10 and codes.count(429) == 40, codes
        refused = next(a for a in answers if a.status_code == 429)
        assert refused.json()["limit"] == "tasks_in_flight" and refused.headers["Retry-After"]
        assert "FOLLOWTHROUGH_MAX_TASKS_IN_FLIGHT" in refused.json()["detail"]
        total = (await stack.http.get("/tasks", params={"tenant_id": crowd})).json()["total"]
        assert total == 10

        # A group's listed subtasks are tasks in flight too: 1 + 10 do not fit under 10.
        parent = await stack.http.post("/tasks", json=group(tenant(), [email() for _ in range(10)]))
        assert parent.status_code == 429, parent.text
        assert parent.json()["limit"] == "tasks_in_flight" and "needs 11" in parent.json()["detail"]
        fits = await stack.http.post("/tasks", json=group(tenant(), [email() for _ in range(9)]))
        assert fits.status_code == 201, fits.text


async def test_subtasks_and_scheduled_runs_are_charged_to_the_rate(
        dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path):
    async with running_stack(dev_env, engine, tmp_path, rate_limit_per_minute=1, rate_limit_burst=4) as stack:
        busy = tenant()
        # A campaign of 5 messages starts 6 tasks: more than the burst allows at once.
        campaign = await stack.http.post("/tasks", json={
            "type": "campaign", "tenant_id": busy, "payload": {
                "subject": "s", "body": "b", "message_mode": "review",
                "recipients": [{"to": f"r{n}@b.example"} for n in range(5)]}})
        assert campaign.status_code == 422, campaign.text
        [error] = campaign.json()["detail"]
        assert error["loc"] == ["body", "payload"] and "at most 4" in error["msg"] and "needs 6" in error["msg"]

        # A group of a group: 1 + (1 + 1) tasks, leaving one token of four.
        nested = await stack.http.post("/tasks", json=group(busy, [
            {"type": "group", "mode": "review", "payload": {"subtasks": [email()]}}]))
        assert nested.status_code == 201, nested.text
        assert (await stack.http.post("/tasks", json=task_body(tenant_id=busy))).status_code == 201
        refused = await stack.http.post("/tasks", json=task_body(tenant_id=busy))
        assert refused.status_code == 429 and refused.json()["limit"] == "rate", refused.text

        # A schedule's firing is charged like any creation: over the rate it is refused, saying why.
        made = await stack.http.post("/definitions", json={
            "tenant_id": busy, "name": "digest", "type": "email", "mode": "review", "cron": "0 3 1 1 *",
            "payload": {"to": ["a@b.example"], "subject": "Digest", "body": "Hello"}})
        assert made.status_code == 201, made.text
        runner = DefinitionRunner(stack.settings, stack.client, stack.engine)
        firing = await runner.run_scheduled(made.json()["id"], f"firing-{uuid.uuid4().hex[:8]}")
        assert firing.outcome == "refused" and firing.task_id is None
        assert "FOLLOWTHROUGH_RATE_LIMIT_PER_MINUTE" in (firing.detail or "")


def _planned_email(to: str) -> dict:
    return {"type": "email", "title": f"Note to {to}", "mode": "review",
            "payload": {"to": [to], "subject": "Q4", "body": "Pricing changes."}}


async def test_subtasks_an_llm_plans_are_charged_when_planned(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                              tmp_path: Path, llm: FakeLlm):  # noqa: F811
    goal = {"goal": "Tell the customers", "allowed_types": ["email"], "execution": "parallel"}
    async with running_stack(dev_env, engine, tmp_path, llm_base_url=llm.url, llm_model="fake-gpt-1",
                             llm_api_key_secret="llm_key", rate_limit_per_minute=1, rate_limit_burst=3) as stack:
        # The project and its two planned messages take the three tokens.
        llm.reply({"subtasks": [_planned_email("ana@one.example"), _planned_email("bo@two.example")]})
        busy = tenant()
        project = await stack.http.post("/tasks", json={"type": "project", "title": "Q4", "mode": "review",
                                                        "tenant_id": busy, "payload": goal})
        assert project.status_code == 201, project.text
        # Drafted (by the fake's default answer) and waiting: no draft can take the next plan's answer.
        await eventually(lambda: stack.http.get(f"/tasks/{project.json()['id']}/subtasks"),
                         lambda r: r.json()["total"] == 2
                         and all(c["status"] == "awaiting_approval" for c in r.json()["items"]), timeout=30)
        refused = await stack.http.post("/tasks", json=task_body(tenant_id=busy))
        assert refused.status_code == 429 and refused.json()["limit"] == "rate", refused.text

        # A plan that needs more than the burst at once fails its project, saying why.
        llm.reply({"subtasks": [_planned_email(f"r{n}@three.example") for n in range(4)]})
        too_big = await stack.http.post("/tasks", json={"type": "project", "title": "Q4", "mode": "review",
                                                        "tenant_id": tenant(), "payload": goal})
        assert too_big.status_code == 201, too_big.text
        failed = await until_status(stack, too_big.json()["id"], "failed", timeout=30)
        assert "FOLLOWTHROUGH_RATE_LIMIT_BURST" in failed["error"]
        assert (await stack.http.get(f"/tasks/{too_big.json()['id']}/subtasks")).json()["total"] == 0
