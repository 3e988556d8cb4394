"""Hostile templates through the HTTP API and the real dev server: refused with a 422 when a definition is
created or run, failing a task clearly (and once) when its draft renders one, and never holding up the
event loop that answers other requests meanwhile."""

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

import followthrough.services.definitions
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, get_task, until_status

NESTED_LOOPS = "{% for a in range(15000) %}{% for b in range(15000) %}x{% endfor %}{% endfor %}"
# Loops over a variable's characters (8e9 rounds): no range, no output, only time: just the deadline stops it.
BUSY_LOOPS = "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}done"
BUSY_VARIABLES = {"s": "x" * 2000}
HOSTILE = {
    "nested loops": NESTED_LOOPS,
    "string repetition": "{{ 'x' * 10**9 }}",
    "a large power": "{{ 2 ** 100000000 }}",
    "a power of a power": "{{ 10 ** (10 ** 8) }}",
    "a literal repetition": "{{ 'x' * 1000000000 }}",
    "a wide filter": "{{ 'x'|center(1000000000) }}",
    "a wide format": "{{ '%01000000000d' % 1 }}",
    "deeply nested output": "{% set ns = namespace(v=1) %}{% for i in range(50000) %}{% set ns.v = [ns.v] %}"
                            "{% endfor %}{{ ns.v }}",
    "a doubling namespace": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                            "{% endfor %}{{ ns.s }}",
}


@pytest_asyncio.fixture
async def bstack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path, template_render_timeout_seconds=3) as running:
        yield running


def definition(stack: Stack, **overrides) -> dict:
    return {"tenant_id": stack.tenant, "name": f"hostile-{uuid.uuid4().hex[:6]}", "type": "email",
            "mode": "autonomous", "title": "Hello",
            "payload": {"to": ["a@example.com"], "subject": "Hi", "body": "Hello"}} | overrides


def limit_errors(response) -> list[dict]:
    assert response.status_code == 422, response.text
    return [e for e in response.json()["detail"] if e["type"] == "template_limit"]


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_scheduled_definition_whose_title_is_hostile_is_refused_at_creation(bstack: Stack, template: str):
    # A scheduled definition is rendered when it is created (its variables all have defaults).
    response = await bstack.http.post("/definitions", json=definition(bstack, title=template, cron="@daily"))
    [error] = limit_errors(response)
    assert error["loc"][-1] == "title" and "limit" in error["msg"]
    assert (await bstack.http.get("/definitions", params={"tenant_id": bstack.tenant})).json()["total"] == 0


@pytest.mark.parametrize("template", HOSTILE.values(), ids=HOSTILE.keys())
async def test_a_definition_whose_template_is_hostile_is_refused_when_run(bstack: Stack, template: str):
    created = await bstack.http.post("/definitions", json=definition(bstack, payload={
        "to": ["a@example.com"], "subject": "Hi", "body": template}))
    assert created.status_code == 201, created.text
    assert created.json()["variables_used"] == []  # reading its variables renders nothing
    run = await bstack.http.post(f"/definitions/{created.json()['id']}/run")
    [error] = limit_errors(run)
    assert error["loc"] == ["definition", "payload", "body"], error
    assert (await bstack.http.get(f"/definitions/{created.json()['id']}/runs")).json()["total"] == 0


async def test_templates_longer_than_the_limit_are_refused_at_creation(dev_env, engine, tmp_path):
    async with running_stack(dev_env, engine, tmp_path, template_max_chars=1000) as stack:
        response = await stack.http.post("/definitions", json=definition(stack, payload={
            "to": ["a@example.com"], "subject": "Hi", "body": "x" * 1001}))
        [error] = limit_errors(response)
        assert error["loc"] == ["body", "payload", "body"] and "1000" in error["msg"]
        assert (await stack.http.post("/definitions", json=definition(stack, payload={
            "to": ["a@example.com"], "subject": "Hi", "body": "x" * 1000}))).status_code == 201


async def test_a_template_nested_too_deeply_to_parse_is_a_422(bstack: Stack):
    deep = "{{ " + "(" * 600 + "1" + ")" * 600 + " }}"
    response = await bstack.http.post("/definitions", json=definition(bstack, title=deep))
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["body", "title"]
    task = await bstack.http.post("/tasks", json={"tenant_id": bstack.tenant, "type": "email", "title": "deep",
                                                  "payload": {"to": ["a@example.com"], "subject": "x",
                                                              "body": deep}})
    assert task.status_code == 422, task.text
    assert task.json()["detail"][0]["loc"] == ["body", "payload", "body"] and "nested" in task.json()["detail"][0]["msg"]


async def test_a_draft_whose_template_is_hostile_fails_the_task_once_and_clearly(bstack: Stack):
    # The definition's body is a template that renders to a template: the email's, rendered by the worker.
    created = await bstack.http.post("/definitions", json=definition(bstack, payload={
        "to": ["a@example.com"], "subject": "Hi", "body": "{% raw %}" + NESTED_LOOPS + "{% endraw %}"}))
    assert created.status_code == 201, created.text
    run = await bstack.http.post(f"/definitions/{created.json()['id']}/run")
    assert run.status_code == 201, run.text
    task = await until_status(bstack, run.json()["id"], "failed", timeout=60)
    assert "template" in task["error"] and "limit" in task["error"], task["error"]
    failed = (await bstack.http.get(f"/tasks/{task['id']}/events")).json()["items"][-1]
    assert (failed["type"], failed["data"]["step"], failed["data"]["error_type"]) == (
        "TASK_EXECUTION_FAILED", "draft", "TemplateError")
    assert task["attempts"] == 1  # not retried: no retry renders it any cheaper


async def test_a_draft_that_runs_past_the_deadline_fails_the_task_clearly(bstack: Stack):
    created = await bstack.http.post("/tasks", json={
        "tenant_id": bstack.tenant, "type": "email", "mode": "autonomous", "title": "busy",
        "payload": {"to": ["a@example.com"], "subject": "Hi", "body": BUSY_LOOPS, "variables": BUSY_VARIABLES}})
    assert created.status_code == 201, created.text
    task = await until_status(bstack, created.json()["id"], "failed", timeout=60)
    assert "3" in task["error"] and "seconds" in task["error"], task["error"]
    assert task["attempts"] == 1


async def test_other_requests_are_answered_while_a_hostile_render_runs(bstack: Stack,
                                                                       monkeypatch: pytest.MonkeyPatch):
    created = await bstack.http.post("/definitions", json=definition(bstack, title=BUSY_LOOPS))
    assert created.status_code == 201, created.text
    started, finished = asyncio.Event(), asyncio.Event()
    original = followthrough.services.definitions.render

    def watched(*args, **kwargs):  # either a plain or an async render: it tells when it starts and ends
        started.set()
        if inspect.iscoroutinefunction(original):
            async def awaited():
                try:
                    return await original(*args, **kwargs)
                finally:
                    finished.set()
            return awaited()
        try:
            return original(*args, **kwargs)
        finally:
            finished.set()

    monkeypatch.setattr(followthrough.services.definitions, "render", watched)
    hostile = asyncio.create_task(bstack.http.post(f"/definitions/{created.json()['id']}/run",
                                                   json={"variables": BUSY_VARIABLES}))
    await started.wait()
    health = await bstack.http.get("/healthz")
    listed = await bstack.http.get("/definitions", params={"tenant_id": bstack.tenant})
    assert not finished.is_set(), "the render held the event loop until it was over"
    assert health.status_code == 200 and listed.json()["total"] == 1
    [error] = limit_errors(await hostile)
    assert "3" in error["msg"] and "seconds" in error["msg"]


async def test_the_worker_drafts_other_tasks_while_a_hostile_draft_renders(dev_env, engine, tmp_path):
    async with running_stack(dev_env, engine, tmp_path, template_render_timeout_seconds=10) as stack:
        hostile = await stack.http.post("/tasks", json={
            "tenant_id": stack.tenant, "type": "email", "mode": "autonomous", "title": "busy",
            "payload": {"to": ["a@example.com"], "subject": "Hi", "body": BUSY_LOOPS,
                        "variables": BUSY_VARIABLES}})
        assert hostile.status_code == 201, hostile.text
        await eventually(lambda: get_task(stack, hostile.json()["id"]), lambda t: t["stage"] == "drafting")
        other = await stack.http.post("/tasks", json={
            "tenant_id": stack.tenant, "type": "email", "mode": "review", "title": "plain",
            "payload": {"to": ["a@example.com"], "subject": "Hi {{ n }}", "body": "Hello", "variables": {"n": 1}}})
        waiting = await until_status(stack, other.json()["id"], "awaiting_approval", timeout=30)
        assert waiting["draft"]["subject"] == "Hi 1"
        still = await get_task(stack, hostile.json()["id"])
        assert (still["status"], still["stage"]) == ("in_progress", "drafting"), still
        failed = await until_status(stack, hostile.json()["id"], "failed", timeout=60)
        assert "10 seconds" in failed["error"]


async def test_a_render_that_needs_too_much_memory_is_a_422_and_the_next_render_works(dev_env, engine, tmp_path):
    # 100,000 new strings of 100 KB: nothing the sandbox checks is over a bound, only the memory they take.
    hog = ("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set _ = ns.l.append(s ~ i) %}"
           "{% endfor %}{{ ns.l|length }}")
    async with running_stack(dev_env, engine, tmp_path, template_render_memory_mb=256) as stack:
        created = await stack.http.post("/definitions", json=definition(stack, payload={
            "to": ["a@example.com"], "subject": "Hi", "body": hog}))
        assert created.status_code == 201, created.text
        run = await stack.http.post(f"/definitions/{created.json()['id']}/run", json={"variables": {"s": "x" * 100_000}})
        [error] = limit_errors(run)
        assert "256 MiB" in error["msg"] and "template_render_memory_mb" in error["msg"]
        plain = await stack.http.post("/definitions", json=definition(stack, title="Hi {{ who }}", payload={
            "to": ["a@example.com"], "subject": "Hi", "body": "Hello"}))
        ok = await stack.http.post(f"/definitions/{plain.json()['id']}/run", json={"variables": {"who": "Ada"}})
        assert ok.status_code == 201, ok.text
        assert (await get_task(stack, ok.json()["id"]))["title"] == "Hi Ada"
