"""Browser tasks end to end: created through the HTTP API (uvicorn on a free port, a worker behind it, the
Temporal dev server), run in Debian's Chromium against real pages on loopback addresses; their artifacts
listed and served, a failing step reported by index and cause, the SSRF guard at creation and at run
time, bad steps refused at creation, and the artifact routes closed to other tenants. On every configured
database."""

import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.api.test_keys_and_roles import bearer, keyed, make_key  # noqa: F401 - keyed is a fixture
from tests.conftest import Stack, served_api
from tests.helpers import add_task_secret, eventually
from tests.pages import Pages

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def site() -> Iterator[Pages]:
    with Pages("127.0.0.1") as pages:  # allowed: the test settings allow 127.0.0.1/32
        yield pages


@pytest.fixture
def internal() -> Iterator[Pages]:
    with Pages("127.0.0.2") as pages:  # refused: loopback, not in the allowlist
        yield pages


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with served_api(dev_env, engine, tmp_path) as (url, _settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield http


async def create(http: httpx.AsyncClient, steps: list[dict], headers: dict | None = None, **payload: object) -> str:
    # With a key, the task is the key's tenant's.
    tenant = {} if headers else {"tenant_id": "browser-e2e"}
    answer = await http.post("/tasks", headers=headers, json={
        "type": "browser", "subject_ref_id": uuid.uuid4().hex, "payload": {"steps": steps} | payload} | tenant)
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


async def ended(http: httpx.AsyncClient, task_id: str, headers: dict | None = None) -> dict:
    answer = await eventually(lambda: http.get(f"/tasks/{task_id}", headers=headers),
                              lambda r: r.json()["status"] in ("completed", "failed"), timeout=90)
    return answer.json()


def png_size(image: bytes) -> tuple[int, int]:
    assert image.startswith(PNG) and image[12:16] == b"IHDR"
    return struct.unpack(">II", image[16:24])


async def test_a_form_filled_submitted_and_read_with_artifacts_served(api: httpx.AsyncClient, site: Pages,
                                                                      tmp_path: Path):
    # For the tenant `create` uses, in the task-secrets file of the settings `api` runs with (tests/conftest.py).
    add_task_secret(tmp_path / "task-secrets.json", "browser-e2e", "signup_email", "ann@example.com",
                    hosts=["127.0.0.1"])
    task_id = await create(api, [
        *site.sign_up_steps(),
        {"action": "navigate", "url": f"{site.url}/delayed"},
        {"action": "wait", "selector": "#late", "timeout_ms": 5000},
        {"action": "navigate", "url": f"{site.url}/catalogue"},
        {"action": "extract", "selector": "meta[name=price]", "attribute": "content", "name": "price"},
        {"action": "extract", "selector": "a.item", "attribute": "data-sku", "all": True, "name": "skus"},
        {"action": "screenshot", "name": "catalogue", "full_page": True},
    ], viewport_width=1000, viewport_height=600)
    task = await ended(api, task_id)
    assert task["status"] == "completed", task
    assert site.posted == [{"name": ["Ann"], "email": ["ann@example.com"]}]
    delivery = task["result"]["delivery"]
    assert delivery["channel"] == "browser" and delivery["delivery_id"] and delivery["attempt"] == 1
    detail = delivery["detail"]
    assert detail["extracted"] == {"thanks": "Thanks, Ann", "price": "42.50", "skus": ["A-1", "B-2", "C-3"]}
    assert detail["title"] == "Catalogue" and detail["refused_requests"] == []
    assert "ann@example.com" not in str(task)  # the secret's value is nowhere in the task

    listed = (await api.get(f"/tasks/{task_id}/artifacts")).json()
    assert listed["total"] == 4
    assert [(a["step_index"], a["name"], a["kind"], a["content_type"]) for a in listed["items"]] == [
        (5, "thanks", "data", "application/json"), (9, "price", "data", "application/json"),
        (10, "skus", "data", "application/json"), (11, "catalogue", "screenshot", "image/png")]
    assert all("content" not in a and "data" not in a for a in listed["items"])
    by_name = {a["name"]: a for a in listed["items"]}

    shot = await api.get(f"/tasks/{task_id}/artifacts/{by_name['catalogue']['id']}")
    assert shot.status_code == 200 and shot.headers["content-type"] == "image/png"
    assert len(shot.content) == by_name["catalogue"]["size"] > 1000
    assert png_size(shot.content)[0] == 1000  # the viewport's width, the page's full height
    skus = await api.get(f"/tasks/{task_id}/artifacts/{by_name['skus']['id']}")
    assert skus.headers["content-type"] == "application/json" and skus.json() == ["A-1", "B-2", "C-3"]
    assert (await api.get(f"/tasks/{task_id}/artifacts/{uuid.uuid4()}")).status_code == 404


async def test_a_failing_step_fails_the_task_naming_the_step_and_its_cause(api: httpx.AsyncClient, site: Pages):
    task_id = await create(api, [
        {"action": "navigate", "url": f"{site.url}/form"},
        {"action": "type", "selector": "#name", "text": "Ann"},
        {"action": "click", "selector": "#nowhere", "timeout_ms": 500},
        {"action": "screenshot", "name": "never"},
    ])
    task = await ended(api, task_id)
    assert task["status"] == "failed"
    assert task["error"] == "send failed: step 2 (click '#nowhere'): timed out after 500 ms waiting for the selector"
    events = (await api.get(f"/tasks/{task_id}/events")).json()["items"]
    assert events[-1]["data"]["error_type"] == "BrowserStepFailed"
    assert events[-1]["data"]["attempts"] == 1  # a missing element is not retried
    assert site.posted == []
    listed = (await api.get(f"/tasks/{task_id}/artifacts")).json()["items"]
    assert [(a["step_index"], a["name"], a["kind"]) for a in listed] == [(2, "failure", "screenshot")]


async def test_the_ssrf_guard_at_creation_and_on_every_request_chromium_makes(api: httpx.AsyncClient, site: Pages,
                                                                              internal: Pages):
    # A navigation to a refused address literal is refused when the task is created.
    refused = await api.post("/tasks", json={"type": "browser", "tenant_id": "browser-e2e", "payload": {"steps": [
        {"action": "navigate", "url": f"{site.url}/form"},
        {"action": "navigate", "url": f"{internal.url}/secret"}]}})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "payload", "steps", "1", "url"]
    assert "127.0.0.2 is a loopback address" in refused.json()["detail"][0]["msg"]

    # A page on an allowed host cannot make Chromium fetch a refused one, by any means.
    probed = await create(api, [
        {"action": "navigate", "url": f"{site.url}/probe?target={internal.url}/secret"},
        {"action": "wait", "selector": "#status:not(:has-text('waiting'))"},
        {"action": "extract", "selector": "#status", "name": "status"}])
    task = await ended(api, probed)
    assert task["status"] == "completed", task
    detail = task["result"]["delivery"]["detail"]
    assert detail["extracted"]["status"] == "fetch failed, ws failed"
    assert {r["url"].split("?via=")[1] for r in detail["refused_requests"]} == {"script", "img", "frame", "fetch",
                                                                                 "ws"}

    # Nor follow a redirect to one: the task fails, not retried.
    redirected = await create(api, [{"action": "navigate", "url": f"{site.url}/redirect?to={internal.url}/secret"}])
    task = await ended(api, redirected)
    assert task["status"] == "failed"
    assert f"step 0 (navigate '{site.url}/redirect?to={internal.url}/secret'): {internal.url}/secret refused: " \
           f"127.0.0.2 is a loopback address" in task["error"]
    events = (await api.get(f"/tasks/{redirected}/events")).json()["items"]
    assert events[-1]["data"]["error_type"] == "OutboundRefused" and events[-1]["data"]["attempts"] == 1
    assert internal.paths == []


@pytest.mark.parametrize("steps, where, reason", [
    ([], ("steps",), "at least 1 item"),
    ([{"action": "click", "selector": "#a"}], (), "the first step must be navigate"),
    ([{"action": "navigate", "url": "file:///etc/passwd"}], ("steps", 0, "navigate", "url"), "http:// or https://"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "hover", "selector": "#a"}],
     ("steps", 1), "does not match any of the expected tags"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "click"}],
     ("steps", 1, "click", "selector"), "Field required"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "wait", "selector": "#a", "ms": 5}],
     ("steps", 1, "wait"), "either `selector` or `ms`"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "wait", "ms": 600_000}],
     ("steps", 1, "wait", "ms"), "less than or equal to 30000"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "type", "selector": "#a"}],
     ("steps", 1, "type"), "either `text` or `secret`"),
    ([{"action": "navigate", "url": "https://example.com", "timeout_ms": 3_600_000}],
     ("steps", 0, "navigate", "timeout_ms"), "less than or equal to 60000"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "screenshot", "name": "a"},
      {"action": "extract", "selector": "h1", "name": "a"}], (), "step 2: the name 'a' is taken"),
    ([{"action": "navigate", "url": "https://example.com"}, {"action": "screenshot", "name": "../etc"}],
     ("steps", 1, "screenshot", "name"), "should match pattern"),
])
async def test_bad_steps_are_refused_at_creation_with_the_reason(api: httpx.AsyncClient, steps: list, where: tuple,
                                                                  reason: str):
    answer = await api.post("/tasks", json={"type": "browser", "payload": {"steps": steps}})
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert any(e["loc"] == ["body", "payload", *map(str, where)] or e["loc"] == ["body", "payload", *where]
               for e in errors), errors
    assert any(reason in e["msg"] for e in errors), errors


async def test_the_artifact_routes_answer_their_own_tenant_only(keyed: Stack, engine: AsyncEngine,  # noqa: F811
                                                                site: Pages):
    key_a = await make_key(engine, keyed.tenant, "ann", "admin")
    key_b = await make_key(engine, f"{keyed.tenant}-b", "bob", "admin")
    mine = await create(keyed.http, [{"action": "navigate", "url": f"{site.url}/catalogue"},
                                     {"action": "screenshot", "name": "page"}], headers=bearer(key_a))
    theirs = await create(keyed.http, [{"action": "navigate", "url": f"{site.url}/catalogue"},
                                       {"action": "extract", "selector": "h1", "name": "heading"}],
                          headers=bearer(key_b))
    assert (await ended(keyed.http, mine, bearer(key_a)))["status"] == "completed"
    assert (await ended(keyed.http, theirs, bearer(key_b)))["status"] == "completed"
    shot = (await keyed.http.get(f"/tasks/{mine}/artifacts", headers=bearer(key_a))).json()["items"][0]
    assert (await keyed.http.get(f"/tasks/{mine}/artifacts/{shot['id']}", headers=bearer(key_a))).status_code == 200

    listing = await keyed.http.get(f"/tasks/{mine}/artifacts", headers=bearer(key_b))
    assert listing.status_code == 404 and listing.json()["detail"] == f"task {mine!r} not found"
    content = await keyed.http.get(f"/tasks/{mine}/artifacts/{shot['id']}", headers=bearer(key_b))
    assert content.status_code == 404
    # Nor through a task of one's own: the artifact itself is checked, and answers like one that does not exist.
    through = await keyed.http.get(f"/tasks/{theirs}/artifacts/{shot['id']}", headers=bearer(key_b))
    missing = await keyed.http.get(f"/tasks/{theirs}/artifacts/{uuid.uuid4()}", headers=bearer(key_b))
    assert through.status_code == missing.status_code == 404
    assert through.json()["detail"] == f"artifact {shot['id']!r} not found"
