"""The LLM client, drafting activity and planner against a real OpenAI-compatible server on 127.0.0.1."""

import asyncio
import dataclasses
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from followthrough.activities.drafting import DraftingActivities
from followthrough.domain import policies
from followthrough.domain.contracts import DraftRequest
from followthrough.infra.llm import (
    LlmAnswerInvalid,
    LlmConfig,
    LlmNotConfigured,
    LlmRefused,
    LlmUnavailable,
    complete_json,
    llm_config,
)
from followthrough.infra.llm import complete_with_tools, parse_json_object, retry_after
from followthrough.tasktypes.llm_drafting import confidence
from followthrough.tasktypes.llm_planning import InvalidPlan, plan_subtasks
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from tests.helpers import task_input
from tests.llm_server import FakeLlm, completion

KEY = f"sk-test-{uuid.uuid4().hex}"


@pytest.fixture
def llm() -> Iterator[FakeLlm]:
    with FakeLlm() as running:
        yield running


@pytest_asyncio.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def llm_settings(llm: FakeLlm, tmp_path: Path, **overrides: object) -> Settings:
    return Settings(data_dir=tmp_path, llm_base_url=llm.url, llm_model="gpt-test", llm_api_key_secret="llm_key",
                    secrets_file=tmp_path / "secrets.json", **overrides)


@pytest.fixture
def secrets(tmp_path: Path) -> SecretStore:
    (tmp_path / "secrets.json").write_text(json.dumps({"llm_key": KEY}))
    return SecretStore(tmp_path / "secrets.json", environ={})


# ---- the client -------------------------------------------------------------

async def test_a_completion_asks_for_json_with_the_key_and_reports_usage(llm, http):
    llm.reply({"subject": "Hi", "body": "Hello"}, model="gpt-test-2025-01-01", prompt_tokens=120,
              completion_tokens=30)
    config = LlmConfig(base_url=llm.url, model="gpt-test", temperature=0.2)
    answer, usage = await complete_json(http, config, KEY, [{"role": "user", "content": "Say hi"}])
    assert answer == {"subject": "Hi", "body": "Hello"}
    assert (usage.model, usage.prompt_tokens, usage.completion_tokens) == ("gpt-test-2025-01-01", 120, 30)
    assert usage.latency_ms >= 0
    [got] = llm.requests
    assert got.path == "/v1/chat/completions"
    assert got.headers["authorization"] == f"Bearer {KEY}"
    assert got.json() == {"model": "gpt-test", "messages": [{"role": "user", "content": "Say hi"}],
                          "response_format": {"type": "json_object"}, "temperature": 0.2}


@pytest.mark.parametrize("content", [
    '```json\n{"a": 1}\n```', 'Here you go: {"a": 1} Hope it helps.', ' {"a": 1} '])
def test_an_answer_is_parsed_through_fences_and_words(content):
    assert parse_json_object(content) == {"a": 1}


@pytest.mark.parametrize("content", ["Sure! The subject is Hello.", "[1, 2]", '{"a": '])
def test_an_answer_without_a_json_object_is_invalid(content):
    with pytest.raises(LlmAnswerInvalid, match="not a JSON object"):
        parse_json_object(content)


@pytest.mark.parametrize(("status", "error"), [
    (500, LlmUnavailable), (502, LlmUnavailable), (503, LlmUnavailable), (429, LlmUnavailable), (408, LlmUnavailable),
    (400, LlmRefused), (401, LlmRefused), (403, LlmRefused), (404, LlmRefused), (422, LlmRefused)])
async def test_error_statuses_are_retryable_or_not(llm, http, status, error):
    llm.fail(status, f"the key {KEY} is no good")
    with pytest.raises(error) as raised:
        await complete_json(http, LlmConfig(base_url=llm.url, model="m"), KEY, [])
    assert raised.value.retryable is (error is LlmUnavailable)
    assert f"answered {status}" in str(raised.value) and "is no good" in str(raised.value)
    assert KEY not in str(raised.value)


async def test_retry_after_is_kept_for_the_next_attempt(llm, http):
    llm.fail(429, "slow down", headers={"Retry-After": "7"})
    with pytest.raises(LlmUnavailable) as raised:
        await complete_json(http, LlmConfig(base_url=llm.url, model="m"), "", [])
    assert raised.value.retry_after == 7
    assert "authorization" not in llm.requests[0].headers


def test_retry_after_reads_seconds_and_dates_and_is_capped():
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("1.5") == 1.5 and retry_after("86400") == 600
    in_a_minute = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=60), usegmt=True)
    assert 55 <= retry_after(in_a_minute) <= 60


async def test_a_slow_endpoint_times_out_as_unavailable(llm, http):
    llm.raw(200, "{}", delay=1.0)
    with pytest.raises(LlmUnavailable, match="did not answer within 0.2 s"):
        await complete_json(http, LlmConfig(base_url=llm.url, model="m", timeout_seconds=0.2), "", [])


async def test_an_unreachable_endpoint_is_unavailable(http):
    with pytest.raises(LlmUnavailable, match="unreachable"):
        await complete_json(http, LlmConfig(base_url="http://127.0.0.1:9/v1", model="m"), "", [])


@pytest.mark.parametrize("body", ['{"choices": []}', "not json", '{"choices": [{"message": {}}]}'])
async def test_a_body_that_is_no_chat_completion_is_invalid(llm, http, body):
    llm.raw(200, body)
    with pytest.raises(LlmAnswerInvalid, match="not a chat completion"):
        await complete_json(http, LlmConfig(base_url=llm.url, model="m"), "", [])


async def test_an_answer_cut_off_at_the_token_limit_is_invalid(llm, http):
    llm.reply('{"subject": "Hi", "bo', finish_reason="length")
    with pytest.raises(LlmAnswerInvalid, match="cut off"):
        await complete_json(http, LlmConfig(base_url=llm.url, model="m"), "", [])


def test_confidence_is_a_number_from_0_to_1():
    assert confidence(None) is None
    assert confidence(0.8) == 0.8 and confidence("0.25") == 0.25 and confidence(85) == 0.85
    assert confidence("90%") == 0.9 and confidence(1) == 1.0 and confidence(0) == 0.0
    for bad in ["high", -0.1, 250, True, [0.5]]:
        with pytest.raises(LlmAnswerInvalid):
            confidence(bad)


def test_configuration_per_type(tmp_path):
    assert llm_config(Settings(data_dir=tmp_path), "invoice_follow_up") is None
    settings = Settings(data_dir=tmp_path, llm_base_url="http://llm.example/v1/", llm_model="base",
                        llm_temperature=0.7, llm_types={"email": {"model": "writer", "temperature": 0.1},
                                                        "invoice_follow_up": {"enabled": False}})
    assert llm_config(settings, "invoice_follow_up") is None
    assert llm_config(settings, "email") == LlmConfig("http://llm.example/v1", "writer", "", 30, 0.1)
    assert llm_config(settings, "reminder") == LlmConfig("http://llm.example/v1", "base", "", 30, 0.7)


# ---- the draft activity -------------------------------------------------------

async def run_draft(settings: Settings, secrets: SecretStore, http: httpx.AsyncClient, **task_fields):
    activities = DraftingActivities(settings, None, http, secrets)
    return await ActivityEnvironment().run(activities.draft, DraftRequest(task=task_input(**task_fields)))


async def test_the_llm_writes_subject_and_body_but_never_the_recipients(llm, http, secrets, tmp_path):
    llm.reply({"subject": "INV-123:\r\nBcc: attacker@evil.example", "body": "  Dear ACME Corp, please pay.  ",
               "to": ["attacker@evil.example"], "channel": "webhook", "confidence": 0.95})
    result = await run_draft(llm_settings(llm, tmp_path), secrets, http)
    assert result.draft.to == ["billing@acme.example"] and result.draft.channel == "email"
    assert result.draft.subject == "INV-123: Bcc: attacker@evil.example"  # one header line
    assert result.draft.body == "Dear ACME Corp, please pay."
    assert (result.origin.drafter, result.origin.model, result.origin.confidence) == ("llm", "fake-gpt-1", 0.95)
    assert (result.origin.prompt_tokens, result.origin.completion_tokens) == (321, 54)
    assert result.flags == []
    request = llm.requests[0].json()
    assert request["model"] == "gpt-test" and llm.requests[0].headers["authorization"] == f"Bearer {KEY}"
    system, user = request["messages"]
    assert system["role"] == "system" and '"confidence"' in system["content"]
    assert user["role"] == "user"
    for fact in ["ACME Corp", "billing@acme.example", "INV-123", "1200.00 USD", "2025-12-20", "Days overdue: 10",
                 "Reminder: invoice INV-123 is 10 days overdue"]:
        assert fact in user["content"]


async def test_low_or_missing_confidence_is_a_guardrail_flag(llm, http, secrets, tmp_path):
    settings = llm_settings(llm, tmp_path, llm_confidence_threshold=0.8,
                            guardrails={"strict": {"invoice_follow_up": {"min_confidence": 0.99}}})
    llm.draft(confidence=0.42)
    assert (await run_draft(settings, secrets, http)).flags == [
        "low confidence: the drafting model rated its draft 0.42, below 0.80"]
    llm.draft(confidence=None)
    assert (await run_draft(settings, secrets, http)).flags == [
        "low confidence: the drafting model did not rate its draft"]
    llm.draft(confidence=0.95)
    assert (await run_draft(settings, secrets, http, tenant_id="strict")).flags == [
        "low confidence: the drafting model rated its draft 0.95, below 0.99"]


async def test_without_an_llm_the_templates_draft(llm, http, secrets, tmp_path):
    result = await run_draft(Settings(data_dir=tmp_path), secrets, http)
    assert result.draft.subject == "Reminder: invoice INV-123 is 10 days overdue"
    assert result.origin.drafter == "template" and result.origin.as_event_data() == {"drafter": "template"}
    # A type without a prompt keeps its templates even with an LLM configured, and so does a type opted out.
    opted_out = llm_settings(llm, tmp_path, llm_types={"invoice_follow_up": {"enabled": False}})
    assert (await run_draft(opted_out, secrets, http)).origin.drafter == "template"
    reminder = await run_draft(llm_settings(llm, tmp_path), secrets, http, type="reminder",
                               payload=REMIND)
    assert reminder.origin.drafter == "template"
    assert llm.requests == []


@pytest.mark.parametrize(("script", "error_type", "retryable"), [
    (lambda llm: llm.fail(401, "invalid api key"), policies.LLM_REFUSED, False),
    (lambda llm: llm.fail(503, "overloaded", headers={"Retry-After": "3"}), "LlmUnavailable", True),
    (lambda llm: llm.reply("I cannot help with that."), "LlmAnswerInvalid", True),
    (lambda llm: llm.reply({"subject": "Hi"}), "LlmAnswerInvalid", True),
])
async def test_llm_failures_become_application_errors(llm, http, secrets, tmp_path, script, error_type, retryable):
    script(llm)
    with pytest.raises(ApplicationError) as raised:
        await run_draft(llm_settings(llm, tmp_path), secrets, http)
    assert raised.value.type == error_type and raised.value.non_retryable is not retryable
    assert (error_type in policies.NON_RETRYABLE) is not retryable
    if error_type == "LlmUnavailable":
        assert raised.value.next_retry_delay == timedelta(seconds=3)


async def test_a_missing_api_key_secret_is_permanent(llm, http, tmp_path):
    with pytest.raises(ApplicationError, match="secret 'llm_key' is not configured") as raised:
        await run_draft(llm_settings(llm, tmp_path), SecretStore(None, environ={}), http)
    assert raised.value.type == policies.LLM_NOT_CONFIGURED and raised.value.non_retryable
    assert llm.requests == []


# ---- planning -------------------------------------------------------------------

REMIND = {"message": "Call ACME about INV-9", "email": {"to": ["owner@example.com"]}}
INVOICE = {"customer_name": "ACME Corp", "customer_email": "billing@acme.example", "invoice_number": "INV-9",
           "invoice_amount": 50, "currency": "eur", "due_date": "2026-01-31", "days_overdue": 3}


async def test_a_plan_lists_subtasks_of_known_types(llm, http, secrets, tmp_path):
    llm.reply({"subtasks": [
        {"type": "invoice_follow_up", "title": "Remind ACME about INV-9", "mode": "ASSISTED", "payload": INVOICE},
        {"type": "reminder", "title": "Call ACME if unpaid", "payload": REMIND},
    ]}, prompt_tokens=900, completion_tokens=120)
    task = task_input(type="report", title="Chase every overdue invoice of ACME", payload={"customer": "ACME"})
    plan = await plan_subtasks(llm_settings(llm, tmp_path), task, ["invoice_follow_up", "reminder"], http=http,
                               secrets=secrets)
    assert [(s.type, s.title, s.mode) for s in plan.subtasks] == [
        ("invoice_follow_up", "Remind ACME about INV-9", "assisted"), ("reminder", "Call ACME if unpaid", "autonomous")]
    assert plan.subtasks[0].payload == INVOICE
    assert (plan.usage.model, plan.usage.prompt_tokens, plan.usage.completion_tokens) == ("fake-gpt-1", 900, 120)
    prompt = llm.prompt()
    assert "Chase every overdue invoice of ACME" in prompt and '"customer": "ACME"' in prompt
    assert "- invoice_follow_up (default mode assisted)" in prompt and "customer_email" in prompt
    assert "- email " not in prompt  # only the allowed types are offered
    assert llm.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(("subtasks", "message"), [
    ([{"type": "fax", "title": "Fax it", "payload": {}}], "subtask 0: task type 'fax' is not one of"),
    ([{"type": "email", "title": "Mail", "payload": {"to": ["a@b.example"], "subject": "s", "body": "b"}}],
     "task type 'email' is not one of"),
    ([{"type": "reminder", "title": "ok", "payload": REMIND},
      {"type": "invoice_follow_up", "title": "Remind", "payload": INVOICE | {"customer_email": "nope"}}],
     "subtask 1 (invoice_follow_up): payload is invalid: customer_email"),
    ([{"type": "reminder", "title": "x", "mode": "whenever", "payload": REMIND}], "unknown mode 'whenever'"),
    ([{"type": "reminder", "title": " ", "payload": REMIND}], "title must be text"),
    ([], "the plan has no subtasks"),
])
async def test_an_invalid_plan_is_a_permanent_error(llm, http, secrets, tmp_path, subtasks, message):
    llm.reply({"subtasks": subtasks})
    with pytest.raises(InvalidPlan, match=re.escape(message)) as raised:
        await plan_subtasks(llm_settings(llm, tmp_path), task_input(), ["invoice_follow_up", "reminder"], http=http,
                            secrets=secrets)
    assert not raised.value.retryable and raised.value.error_type in policies.NON_RETRYABLE


async def test_a_plan_that_is_not_a_list_of_objects_may_be_retried(llm, http, secrets, tmp_path):
    llm.reply({"steps": ["remind", "call"]})
    with pytest.raises(LlmAnswerInvalid):
        await plan_subtasks(llm_settings(llm, tmp_path), task_input(), http=http, secrets=secrets)


async def test_planning_needs_a_configured_llm(tmp_path):
    with pytest.raises(LlmNotConfigured):
        await plan_subtasks(Settings(data_dir=tmp_path), task_input())


async def test_the_activity_heartbeats_while_it_waits_and_a_cancel_stops_the_call(llm, http, secrets, tmp_path):
    llm.raw(200, completion(json.dumps({"subject": "S", "body": "B", "confidence": 1})), delay=0.9)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.4))  # a heartbeat every 0.2 s
    beats: list[tuple] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    activities = DraftingActivities(llm_settings(llm, tmp_path), None, http, secrets)
    result = await env.run(activities.draft, DraftRequest(task=task_input()))
    assert result.draft.subject == "S" and len(beats) >= 3

    llm.raw(200, "{}", delay=2)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=timedelta(seconds=0.8))
    env.on_heartbeat = lambda *details: env.cancel()
    with pytest.raises(asyncio.CancelledError):
        await env.run(activities.draft, DraftRequest(task=task_input()))


async def test_a_completion_with_tools_returns_the_message_and_its_calls(llm, http):
    llm.call_tools(("lookup", {"id": 7}), content="Looking.", prompt_tokens=11, completion_tokens=3)
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    message, usage = await complete_with_tools(http, LlmConfig(base_url=llm.url, model="m", temperature=0.1), "",
                                               [{"role": "user", "content": "hi"}], tools)
    assert message["content"] == "Looking." and (usage.prompt_tokens, usage.completion_tokens) == (11, 3)
    [call] = message["tool_calls"]
    assert call["function"] == {"name": "lookup", "arguments": '{"id": 7}'} and call["id"]
    sent = llm.requests[0].json()
    assert sent["tools"] == tools and sent["temperature"] == 0.1 and "response_format" not in sent


@pytest.mark.parametrize("message", ['{"role": "assistant", "content": null}',
                                     '{"role": "assistant", "content": null, "tool_calls": [{"id": "x"}]}'])
async def test_a_completion_with_neither_text_nor_well_formed_calls_is_invalid(llm, http, message):
    llm.raw(200, '{"choices": [{"message": %s, "finish_reason": "stop"}]}' % message)
    with pytest.raises(LlmAnswerInvalid):
        await complete_with_tools(http, LlmConfig(base_url=llm.url, model="m"), "", [], [])
