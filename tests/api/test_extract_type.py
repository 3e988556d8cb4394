"""extract tasks end to end: the HTTP API, the dev server and worker, a page served on 127.0.0.1."""

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, running_stack
from tests.helpers import until_status
from tests.receivers import Receiver

PAGE = """<!doctype html><html><body>
<h1 class="title">Widget Pro</h1><span class="price">$89.90</span>
<ul><li class="tag">steel</li><li class="tag">blue</li></ul>
<a class="specs" href="/widgets/42/specs">Specs</a></body></html>"""
HTML = {"Content-Type": "text/html; charset=utf-8"}
FIELDS = {"title": {"selector": "h1.title"}, "price": {"selector": ".price", "type": "number"},
          "tags": {"selector": "li.tag", "all": True}, "specs": {"selector": "a.specs", "attribute": "href"}}
SCHEMA = {"type": "object", "required": ["title", "price"],
          "properties": {"title": {"type": "string"}, "price": {"type": "number", "maximum": 100}}}


@pytest.fixture
def site() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def create(stack: Stack, payload: dict, **fields) -> str:
    body = {"type": "extract", "tenant_id": stack.tenant, "subject_ref_id": uuid.uuid4().hex, "payload": payload}
    response = await stack.http.post("/tasks", json=body | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def last_event(stack: Stack, task_id: str) -> dict:
    return (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"][-1]


async def test_a_page_is_fetched_and_its_fields_land_in_the_result_and_the_events(stack, site):
    site.answer(200, PAGE, headers=HTML)
    task_id = await create(stack, {"url": f"{site.url}/widgets/42", "fields": FIELDS, "schema": SCHEMA})
    task = await until_status(stack, task_id, "completed", timeout=30)  # autonomous by default: no approval
    expected = {"title": "Widget Pro", "price": 89.9, "tags": ["steel", "blue"], "specs": "/widgets/42/specs"}
    assert task["mode"] == "autonomous" and task["draft"]["subject"] == f"Extract from {site.url}/widgets/42"
    detail = task["result"]["delivery"]["detail"]
    assert detail["data"] == expected
    assert (detail["status"], detail["url"], detail["content_type"]) == (200, f"{site.url}/widgets/42", HTML[
        "Content-Type"])
    [got] = site.requests
    assert (got.method, got.path) == ("GET", "/widgets/42")
    event = await last_event(stack, task_id)
    assert event["type"] == "TASK_EXECUTION_COMPLETED" and event["data"]["extracted"] == expected


async def test_html_given_in_the_payload_needs_no_fetch(stack):
    task_id = await create(stack, {"html": PAGE, "fields": {"tags": {"selector": "li", "all": True}}})
    task = await until_status(stack, task_id, "completed", timeout=30)
    assert task["result"]["delivery"]["detail"] == {"data": {"tags": ["steel", "blue"]},
                                                    "event_data": {"extracted": {"tags": ["steel", "blue"]}}}


async def test_a_schema_violation_fails_the_task_naming_the_field(stack, site):
    site.answer(200, PAGE.replace("$89.90", "$189.90"), headers=HTML)
    task_id = await create(stack, {"url": f"{site.url}/w", "fields": FIELDS, "schema": SCHEMA})
    task = await until_status(stack, task_id, "failed", timeout=30)
    assert "field 'price': 189.9 is greater than the maximum of 100" in task["error"]
    event = await last_event(stack, task_id)
    assert (event["data"]["error_type"], event["data"]["attempts"]) == ("ExtractionFailed", 1)  # not retried
    assert len(site.requests) == 1


async def test_a_missing_field_fails_the_task_naming_it(stack, site):
    site.answer(200, PAGE.replace('class="title"', 'class="heading"'), headers=HTML)
    task_id = await create(stack, {"url": f"{site.url}/w", "fields": FIELDS})
    task = await until_status(stack, task_id, "failed", timeout=30)
    assert "field 'title': selector 'h1.title' matched nothing" in task["error"]


async def test_a_page_that_is_not_html_fails_the_task(stack, site):
    site.answer(200, '{"title": "Widget"}')
    task_id = await create(stack, {"url": f"{site.url}/api", "fields": FIELDS})
    task = await until_status(stack, task_id, "failed", timeout=30)
    assert "answered application/json, not HTML" in task["error"]


@pytest.mark.parametrize("payload, where, message", [
    ({"url": "https://shop.example.com/", "fields": {"t": {"selector": "h1[["}}},
     ["payload", "fields", "t", "selector"], "not a valid CSS selector"),
    ({"url": "https://shop.example.com/", "fields": {"t": {"selector": "h1", "type": "date"}}},
     ["payload", "fields", "t", "type"], "'string', 'number', 'integer' or 'boolean'"),
    ({"url": "https://shop.example.com/", "fields": {"t": {"selector": "h1"}},
      "schema": {"properties": {"t": {"type": "text"}}}}, ["payload", "schema"], "not a valid JSON Schema"),
    ({"url": "https://shop.example.com/", "fields": {"t": {"selector": "h1"}}, "schema": {"required": ["price"]}},
     ["payload"], "the schema requires 'price', which no field extracts"),
    ({"fields": {"t": {"selector": "h1"}}}, ["payload"], "give either `url` or `html`"),
    ({"url": "ftp://shop.example.com/", "fields": {"t": {"selector": "h1"}}}, ["payload", "url"], "http"),
    ({"url": "http://10.1.2.3/admin", "fields": {"t": {"selector": "h1"}}}, ["payload", "url"],
     "10.1.2.3 is a private address"),
])
async def test_bad_requests_are_a_422_naming_the_part(stack, payload, where, message):
    body = {"type": "extract", "tenant_id": stack.tenant, "payload": payload}
    response = await stack.http.post("/tasks", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", *where] and message in error["msg"], error


@pytest_asyncio.fixture
async def guarded(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    """Nothing internal allowed: the SSRF guard's defaults."""
    async with running_stack(dev_env, engine, tmp_path, outbound_allow=[]) as running:
        yield running


async def test_a_name_that_resolves_to_loopback_is_refused_when_fetching(guarded, site):
    site.answer(200, PAGE, headers=HTML)
    url = site.url.replace("127.0.0.1", "localhost") + "/w"
    task_id = await create(guarded, {"url": url, "fields": FIELDS})
    task = await until_status(guarded, task_id, "failed", timeout=30)
    assert "a loopback address" in task["error"] and "FOLLOWTHROUGH_OUTBOUND_ALLOW" in task["error"]
    event = await last_event(guarded, task_id)
    assert event["data"]["error_type"] == "OutboundRefused"
    assert site.requests == []
