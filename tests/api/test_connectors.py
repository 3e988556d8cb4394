"""Connectors end to end: the shipped crm connector's actions as task types, through the HTTP API, the dev
server and the worker, against a small CRM on 127.0.0.1 that keeps what it receives; a connector from
FOLLOWTHROUGH_CONNECTORS_DIR; and a task definition of a connector's type."""

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, running_stack
from tests.crm_server import Crm
from tests.helpers import add_task_secret, until_status
from tests.receivers import Receiver

TOKEN = f"crm-{uuid.uuid4().hex}"


@pytest.fixture
def crm() -> Iterator[Crm]:
    with Crm(token=TOKEN) as running:
        yield running


@pytest_asyncio.fixture
async def cstack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path, crm: Crm) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path, connector_base_urls={"crm": crm.url}) as running:
        # The tenant's own token, for the CRM's host only.
        add_task_secret(running.settings, running.tenant, "crm_token", TOKEN, hosts=["127.0.0.1"])
        yield running


async def create(stack: Stack, type_: str, payload: dict, **fields) -> str:
    body = {"type": type_, "tenant_id": stack.tenant, "subject_ref_id": uuid.uuid4().hex, "payload": payload}
    response = await stack.http.post("/tasks", json=body | fields)
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def run(stack: Stack, type_: str, payload: dict, status: str = "completed", **fields) -> dict:
    task_id = await create(stack, type_, payload, **({"mode": "autonomous"} | fields))
    return await until_status(stack, task_id, status, timeout=30)


def answer(task: dict) -> dict:
    return json.loads(task["result"]["delivery"]["detail"]["body"])


async def test_each_action_is_a_task_type_with_a_schema_from_its_variables(cstack):
    types = {t["name"]: t for t in (await cstack.http.get("/task-types")).json()["items"]}
    assert {"crm.create_contact", "crm.update_contact", "crm.create_opportunity", "crm.add_tag"} <= set(types)
    contact = types["crm.create_contact"]
    assert (contact["channel"], contact["default_mode"], contact["description"]) == ("http", "review",
                                                                                      "Create a contact.")
    schema = contact["payload_schema"]
    assert sorted(schema["required"]) == ["email", "first_name"] and schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"email", "first_name", "last_name", "location_id", "phone"}
    assert schema["properties"]["location_id"]["default"] == "main"
    opportunity = types["crm.create_opportunity"]["payload_schema"]
    assert opportunity["properties"]["status"]["enum"] == ["open", "won", "lost", "abandoned"]
    assert types["crm.add_tag"]["payload_schema"]["properties"]["tags"]["items"]["type"] == "string"
    assert types["crm.add_tag"]["default_mode"] == "autonomous"


async def test_create_contact_is_reviewed_then_sent_with_the_secret_and_the_idempotency_key(cstack, crm):
    task_id = await create(cstack, "crm.create_contact", {"first_name": "Ada", "last_name": "Lovelace",
                                                          "email": "ada@example.com"})
    task = await until_status(cstack, task_id, "awaiting_approval")
    assert task["draft"]["subject"] == f"crm.create_contact: POST {crm.url}/contacts"
    assert "crm_token" in task["draft"]["body"] and '"firstName": "Ada"' in task["draft"]["body"]
    assert crm.requests == []
    response = await cstack.http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "alice"})
    assert response.status_code == 200, response.text

    task = await until_status(cstack, task_id, "completed")
    assert task["result"]["delivery"]["detail"]["status"] == 201
    created = answer(task)["contact"]
    assert created == {"id": "c-1", "tags": [], "locationId": "main", "firstName": "Ada", "lastName": "Lovelace",
                       "email": "ada@example.com", "source": "followthrough"}  # no phone: not given
    assert crm.contacts == {"c-1": created}
    [got] = crm.requests
    assert got.headers["authorization"] == f"Bearer {TOKEN}" and got.headers["accept"] == "application/json"
    assert got.headers["idempotency-key"] == f"{task_id}:send"
    events = (await cstack.http.get(f"/tasks/{task_id}/events")).text
    assert TOKEN not in json.dumps(task) and TOKEN not in events


async def test_update_contact_sends_only_what_is_given_to_an_encoded_path(cstack, crm):
    contact = answer(await run(cstack, "crm.create_contact", {"first_name": "Ada", "email": "ada@example.com"}))
    task = await run(cstack, "crm.update_contact", {"contact_id": contact["contact"]["id"], "phone": "+15550100"})
    assert answer(task)["contact"]["phone"] == "+15550100" and crm.contacts["c-1"]["firstName"] == "Ada"
    assert crm.requests[-1].body == {"phone": "+15550100"}
    # A path variable is one path segment, whatever it holds.
    task = await run(cstack, "crm.update_contact", {"contact_id": "../c-1", "email": "x@example.com"}, "failed")
    assert crm.requests[-1].raw_path == "/v1/contacts/..%2Fc-1" and "404" in task["error"]
    assert crm.contacts["c-1"]["email"] == "ada@example.com"


async def test_create_opportunity_keeps_json_types_and_applies_defaults(cstack, crm):
    task = await run(cstack, "crm.create_opportunity", {"pipeline_id": "sales", "contact_id": "c-9",
                                                        "title": "ACME renewal", "value": 12500.5})
    assert answer(task)["opportunity"] == {
        "id": "o-1", "pipelineId": "sales", "locationId": "main", "contactId": "c-9", "name": "ACME renewal",
        "status": "open", "monetaryValue": 12500.5}
    assert crm.opportunities == [answer(task)["opportunity"]]


async def test_add_tag_runs_autonomously_by_default(cstack, crm):
    await run(cstack, "crm.create_contact", {"first_name": "Ada", "email": "ada@example.com"})
    task_id = await create(cstack, "crm.add_tag", {"contact_id": "c-1", "tags": ["vip", "renewal"]})
    task = await until_status(cstack, task_id, "completed")
    assert task["mode"] == "autonomous" and answer(task) == {"tags": ["vip", "renewal"]}
    assert crm.contacts["c-1"]["tags"] == ["vip", "renewal"]


@pytest.mark.parametrize("payload, loc, message", [
    ({"first_name": "Ada"}, ["email"], "Field required"),
    ({"first_name": "Ada", "email": "a@example.com", "company": "ACME"}, ["company"], "Extra inputs"),
    ({"first_name": ["Ada"], "email": "a@example.com"}, ["first_name"], "valid string"),
])
async def test_a_missing_extra_or_mistyped_variable_is_a_422(cstack, crm, payload, loc, message):
    body = {"type": "crm.create_contact", "tenant_id": cstack.tenant, "payload": payload}
    response = await cstack.http.post("/tasks", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "payload", *loc] and message in error["msg"]
    bad_status = await cstack.http.post("/tasks", json=body | {"type": "crm.create_opportunity", "payload": {
        "pipeline_id": "p", "contact_id": "c", "title": "t", "status": "pending"}})
    assert bad_status.status_code == 422 and bad_status.json()["detail"][0]["loc"] == ["body", "payload", "status"]
    assert crm.requests == []


async def test_a_missing_secret_is_refused_at_creation_and_at_the_send(cstack, crm):
    body = {"type": "crm.create_contact", "tenant_id": f"{cstack.tenant}-other", "mode": "autonomous",
            "payload": {"first_name": "Ada", "email": "ada@example.com"}}
    refused = await cstack.http.post("/tasks", json=body)  # a tenant without the connector's secret
    assert refused.status_code == 422, refused.text
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "payload", "auth", "secret"] and "'crm_token'" in error["msg"]

    # Removed after the task was created (it waits for approval): the send fails, once, with no request.
    task_id = await create(cstack, "crm.create_contact", {"first_name": "Ada", "email": "ada@example.com"})
    await until_status(cstack, task_id, "awaiting_approval")
    cstack.settings.task_secrets_file.write_text("{}")
    assert (await cstack.http.post(f"/tasks/{task_id}/approve", json={})).status_code == 200
    task = await until_status(cstack, task_id, "failed")
    assert "the task secret 'crm_token' is not available" in task["error"]
    events = (await cstack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    assert (events[-1]["data"]["error_type"], events[-1]["data"]["attempts"]) == ("SecretRefused", 1)
    assert crm.requests == []


async def test_an_unexpected_status_fails_and_only_5xx_is_retried(cstack, crm):
    crm.script.append((200, {"contact": {"id": "c-0"}}))  # create_contact expects 201
    task = await run(cstack, "crm.create_contact", {"first_name": "Ada", "email": "ada@example.com"}, "failed")
    assert "answered 200 OK" in task["error"] and len(crm.requests) == 1  # refused: not retried

    crm.script.append((503, {"error": "maintenance"}))
    task = await run(cstack, "crm.create_contact", {"first_name": "Bo", "email": "bo@example.com"},
                     retry={"initial_interval_seconds": 0.2})
    assert task["attempts"] == 2 and answer(task)["contact"]["firstName"] == "Bo"
    keys = [r.headers["idempotency-key"] for r in crm.requests[1:]]
    assert keys == [f"{task['id']}:send"] * 2


async def test_a_wrong_token_is_a_401_that_fails_the_task(cstack, crm):
    add_task_secret(cstack.settings, cstack.tenant, "crm_token", "not-the-token")
    task = await run(cstack, "crm.add_tag", {"contact_id": "c-1", "tags": ["vip"]}, "failed")
    assert "401" in task["error"] and "invalid or missing bearer token" in task["error"]
    assert "not-the-token" not in json.dumps(task)


async def test_a_definition_of_a_connector_type_runs_with_variables(cstack, crm):
    definition = await cstack.http.post("/definitions", json={
        "tenant_id": cstack.tenant, "name": f"lead-{uuid.uuid4().hex[:6]}", "type": "crm.create_contact",
        "mode": "autonomous", "title": "New lead {{ email }}",
        "payload": {"first_name": "{{ first }}", "email": "{{ email }}", "location_id": "{{ location }}"},
        "variables": {"location": "emea"}})
    assert definition.status_code == 201, definition.text
    response = await cstack.http.post(f"/definitions/{definition.json()['id']}/run", json={
        "variables": {"first": "Grace", "email": "grace@example.com"}})
    assert response.status_code == 201, response.text
    task = await until_status(cstack, response.json()["id"], "completed")
    assert task["title"] == "New lead grace@example.com"
    assert crm.contacts["c-1"] | {} == answer(task)["contact"]
    assert (crm.contacts["c-1"]["firstName"], crm.contacts["c-1"]["locationId"]) == ("Grace", "emea")


SHOP = """
name: shop
description: A shop's order API
base_url: {url}
auth: {{type: api_key, secret: shop_key, header: X-Shop-Key}}
idempotency_header: X-Request-Key
actions:
  find_orders:
    method: GET
    path: /customers/{{{{ customer }}}}/orders
    query: {{status: "{{{{ status }}}}", limit: "{{{{ limit }}}}", since: "{{{{ since }}}}"}}
    variables:
      status: {{default: open}}
      limit: {{type: integer, default: 20}}
      since: {{required: false}}
    default_mode: autonomous
"""


@pytest_asyncio.fixture
async def shop(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[tuple[Stack, Receiver]]:
    folder = tmp_path / "connectors"
    folder.mkdir()
    with Receiver() as receiver:
        (folder / "shop.yaml").write_text(SHOP.format(url=receiver.url + "/api"))
        async with running_stack(dev_env, engine, tmp_path, connectors_dir=folder) as running:
            add_task_secret(running.settings, running.tenant, "shop_key", "shop-key-1")
            yield running, receiver


async def test_a_connector_from_the_connectors_dir_is_loaded_and_called(shop):
    stack, receiver = shop
    types = {t["name"] for t in (await stack.http.get("/task-types")).json()["items"]}
    assert {"shop.find_orders", "crm.create_contact"} <= types
    task_id = await create(stack, "shop.find_orders", {"customer": "ACME Ltd", "limit": 5})
    task = await until_status(stack, task_id, "completed")
    [got] = receiver.requests
    assert (got.method, got.path) == ("GET", "/api/customers/ACME%20Ltd/orders")
    assert got.query == {"status": ["open"], "limit": ["5"]}  # `since` was not given: left out
    assert got.headers["x-shop-key"] == "shop-key-1" and got.headers["x-request-key"] == f"{task_id}:send"
    assert "idempotency-key" not in got.headers and task["result"]["delivery"]["detail"]["status"] == 200
