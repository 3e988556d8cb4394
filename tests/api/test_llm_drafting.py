"""LLM drafting end to end: the HTTP API, the dev server and worker, and a real OpenAI-compatible
server on 127.0.0.1 (tests/llm_server.py)."""

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, running_stack
from tests.helpers import outbox_rows, task_body, until_status
from tests.llm_server import KEY, FakeLlm, llm  # noqa: F401 - llm is a fixture


@pytest_asyncio.fixture
async def lstack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                 llm: FakeLlm) -> AsyncIterator[Stack]:
    """The `stack` of conftest, drafting through the fake LLM."""
    async with running_stack(dev_env, engine, tmp_path, llm_base_url=llm.url, llm_model="fake-gpt-1",
                             llm_api_key_secret="llm_key", llm_timeout_seconds=10,
                             llm_confidence_threshold=0.75) as running:
        yield running


async def create(stack: Stack, **fields) -> str:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def events(stack: Stack, task_id: str) -> list[dict]:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]


async def drafted(stack: Stack, task_id: str) -> dict:
    [event] = [e for e in await events(stack, task_id) if e["type"] == "TASK_DRAFTED"]
    return event["data"]


async def test_an_llm_draft_is_sent_and_its_model_tokens_and_latency_recorded(lstack, llm):
    llm.draft(subject="INV-123: ten days overdue", body="Dear ACME Corp,\n\nA friendly nudge about INV-123.",
              confidence=0.91, prompt_tokens=412, completion_tokens=77)
    task_id = await create(lstack, mode="assisted")

    task = await until_status(lstack, task_id, "completed")
    assert task["draft"] == {"channel": "email", "to": ["billing@acme.example"], "data": {},
                             "subject": "INV-123: ten days overdue",
                             "body": "Dear ACME Corp,\n\nA friendly nudge about INV-123."}
    [sent] = await outbox_rows(lstack.engine, task_id)
    assert sent.subject == "INV-123: ten days overdue" and "friendly nudge" in sent.body
    data = await drafted(lstack, task_id)
    assert {k: data[k] for k in ["drafter", "model", "prompt_tokens", "completion_tokens", "confidence", "flags"]} == {
        "drafter": "llm", "model": "fake-gpt-1-0613", "prompt_tokens": 412, "completion_tokens": 77,
        "confidence": 0.91, "flags": []}
    assert data["latency_ms"] >= 0

    [request] = llm.requests
    assert request.headers["authorization"] == f"Bearer {KEY}"
    sent_body = request.json()
    assert sent_body["model"] == "fake-gpt-1" and sent_body["response_format"] == {"type": "json_object"}
    assert [m["role"] for m in sent_body["messages"]] == ["system", "user"]
    prompt = llm.prompt()
    for fact in ["Customer: ACME Corp <billing@acme.example>", "Invoice: INV-123", "Amount due: 1200.00 USD",
                 "Days overdue: 10", "Subject: Reminder: invoice INV-123 is 10 days overdue"]:
        assert fact in prompt
    everything = json.dumps(task) + json.dumps(await events(lstack, task_id))
    assert KEY not in everything and "llm_key" not in everything


async def test_without_an_llm_the_template_drafts(stack):
    task_id = await create(stack, mode="suggest")
    task = await until_status(stack, task_id, "completed")
    assert task["draft"]["subject"] == "Reminder: invoice INV-123 is 10 days overdue"
    assert await drafted(stack, task_id) == {"flags": [], "drafter": "template"}


async def test_a_low_confidence_draft_waits_for_approval_in_assisted_mode(lstack, llm):
    llm.draft(subject="Overdue?", body="Dear customer, we think something may be owed.", confidence=0.4)
    task_id = await create(lstack, mode="assisted")

    task = await until_status(lstack, task_id, "awaiting_approval")
    assert task["draft"]["body"] == "Dear customer, we think something may be owed."
    [flagged] = [e for e in await events(lstack, task_id) if e["type"] == "TASK_GUARDRAIL_FLAGGED"]
    assert flagged["data"]["reasons"] == ["low confidence: the drafting model rated its draft 0.40, below 0.75"]
    approval = (await lstack.http.get(f"/tasks/{task_id}/approval")).json()
    assert approval["flags"] == flagged["data"]["reasons"]
    assert (await outbox_rows(lstack.engine, task_id)) == []


async def test_an_email_task_keeps_its_recipients_whatever_the_model_answers(lstack, llm):
    llm.reply({"subject": "Meeting moved", "body": "Hello Bob,\n\nThe meeting is now on Friday.",
               "to": ["someone@else.example"], "confidence": 0.88})
    task_id = await create(lstack, type="email", mode="suggest", payload={
        "to": ["bob@acme.example"], "cc": ["carol@acme.example"], "subject": "Hello {{ name }}",
        "body": "meeting moved to {{ day }}", "variables": {"name": "Bob", "day": "Friday"}})

    task = await until_status(lstack, task_id, "completed")
    assert task["result"]["draft"] | {"data": None} == {
        "channel": "email", "to": ["bob@acme.example"], "data": None, "subject": "Meeting moved",
        "body": "Hello Bob,\n\nThe meeting is now on Friday."}
    assert task["result"]["draft"]["data"] == {"cc": ["carol@acme.example"]}
    assert "Subject: Hello Bob" in llm.prompt() and "meeting moved to Friday" in llm.prompt()


async def test_a_server_error_is_retried_then_the_draft_succeeds(lstack, llm):
    llm.fail(500, "upstream overloaded")
    llm.draft(subject="Second time lucky", confidence=0.99)
    task_id = await create(lstack, mode="autonomous")

    task = await until_status(lstack, task_id, "completed")
    assert task["draft"]["subject"] == "Second time lucky"
    assert len(llm.requests) == 2
    [failed] = [e for e in await events(lstack, task_id) if e["type"] == "TASK_ATTEMPT_FAILED"]
    assert (failed["data"]["step"], failed["data"]["attempt"], failed["data"]["error_type"],
            failed["data"]["will_retry"]) == ("draft", 1, "LlmUnavailable", True)
    assert "answered 500" in failed["data"]["message"] and "upstream overloaded" in failed["data"]["message"]


async def test_a_malformed_answer_is_retried(lstack, llm):
    llm.reply("Sure! Here is a lovely email about your invoice.")
    llm.draft(subject="Well formed", confidence=0.9)
    task_id = await create(lstack, mode="autonomous")

    task = await until_status(lstack, task_id, "completed")
    assert task["draft"]["subject"] == "Well formed"
    [failed] = [e for e in await events(lstack, task_id) if e["type"] == "TASK_ATTEMPT_FAILED"]
    assert failed["data"]["error_type"] == "LlmAnswerInvalid" and "not a JSON object" in failed["data"]["message"]


async def test_a_refused_key_fails_the_task_at_once_with_the_reason(lstack, llm):
    llm.fail(401, "Incorrect API key provided")
    task_id = await create(lstack, mode="assisted")

    task = await until_status(lstack, task_id, "failed")
    assert task["error"] == "draft failed: LLM endpoint answered 401 Unauthorized: Incorrect API key provided"
    assert len(llm.requests) == 1
    [failed] = [e for e in await events(lstack, task_id) if e["type"] == "TASK_EXECUTION_FAILED"]
    assert (failed["data"]["step"], failed["data"]["error_type"], failed["data"]["attempts"]) == (
        "draft", "LlmRequestRefused", 1)
