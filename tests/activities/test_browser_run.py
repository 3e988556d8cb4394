"""Browser steps run in Debian's Chromium against real pages on loopback addresses, without Temporal:
what each step does, how failures are named and classified, the SSRF guard on every request the page
makes, and artifacts overwritten (not duplicated) by a second attempt. On every configured database."""

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.activities.browser_guard import RequestGuard
from followthrough.activities.browser_run import BrowserFailure, RunContext, StepFailed, StepRefused, run_steps
from followthrough.activities.transports.base import DeliveryContext
from followthrough.activities.transports.browser import TRANSPORT
from followthrough.domain.contracts import Draft
from followthrough.infra.outbound import OutboundPolicy
from followthrough.infra.secrets import SecretStore
from followthrough.db.tables import TaskArtifact
from followthrough.infra.task_secrets import TaskSecrets
from followthrough.tasktypes.browser import BrowserPayload
from tests.conftest import make_settings
from tests.helpers import free_port
from tests.pages import Pages

CHROMIUM = Path("/usr/bin/chromium")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def site() -> Iterator[Pages]:
    """The pages a task may visit: on 127.0.0.1, which the guard is told to allow."""
    with Pages("127.0.0.1") as pages:
        yield pages


@pytest.fixture
def internal() -> Iterator[Pages]:
    """An address the guard refuses (127.0.0.2: loopback, not in the allowlist) that records any request."""
    with Pages("127.0.0.2") as pages:
        yield pages


def context(engine: AsyncEngine, task_id: str | None = None, chromium: Path = CHROMIUM,
            secrets: TaskSecrets | None = None) -> RunContext:
    return RunContext(engine=engine, task_secrets=secrets or TaskSecrets(None), task_id=task_id or str(uuid.uuid4()),
                      tenant_id="browser-tests", chromium=chromium)


async def run(engine: AsyncEngine, steps: list[dict], ctx: RunContext | None = None,
              guard: RequestGuard | None = None, **payload: object) -> dict:
    guard = guard or RequestGuard(OutboundPolicy.from_entries(["127.0.0.1/32"]))
    return await run_steps(BrowserPayload.model_validate({"steps": steps} | payload), ctx or context(engine), guard,
                           timeout_seconds=60)


async def artifact_rows(engine: AsyncEngine, task_id: str) -> list[TaskArtifact]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(TaskArtifact.__table__).where(  # type: ignore[attr-defined]
            TaskArtifact.task_id == task_id).order_by("step_index"))).all()
    return [TaskArtifact.model_validate(dict(r._mapping)) for r in rows]


async def test_a_form_filled_from_a_secret_submitted_and_read_back(engine: AsyncEngine, site: Pages,
                                                                   tmp_path: Path):
    (tmp_path / "task-secrets.json").write_text(json.dumps({"browser-tests": {"signup_email": {
        "value": "ann@example.com", "hosts": ["127.0.0.1"]}}}))
    secrets = TaskSecrets(tmp_path / "task-secrets.json")
    ctx = context(engine, secrets=secrets)
    result = await run(engine, [
        *site.sign_up_steps(),
        {"action": "screenshot", "name": "after", "full_page": True},
    ], ctx)
    assert site.posted == [{"name": ["Ann"], "email": ["ann@example.com"]}]
    assert result["extracted"] == {"thanks": "Thanks, Ann"}
    assert result["title"] == "Thanks" and result["status"] == 200 and result["refused_requests"] == []
    rows = await artifact_rows(engine, ctx.task_id)
    assert [(r.step_index, r.name, r.kind) for r in rows] == [(5, "thanks", "data"), (6, "after", "screenshot")]
    assert rows[0].data == "Thanks, Ann" and rows[0].content_type == "application/json"
    assert rows[1].content is not None and rows[1].content.startswith(PNG) and rows[1].size == len(rows[1].content)


async def test_a_typed_secret_is_in_no_screenshot_and_no_extracted_value(engine: AsyncEngine, site: Pages,
                                                                        tmp_path: Path):
    value = f"ann-{uuid.uuid4().hex[:8]}@example.com"
    (tmp_path / "task-secrets.json").write_text(json.dumps({"browser-tests": {"signup_email": {
        "value": value, "hosts": ["127.0.0.1"]}}}))
    ctx = context(engine, secrets=TaskSecrets(tmp_path / "task-secrets.json"))
    form = site.sign_up_steps()[:3]  # the form, the name, the secret typed into #email
    with pytest.raises(StepFailed, match=r"^step 3 \(screenshot 'typed'\): the secret typed at step 2 is still in "
                                         r"the page"):
        await run(engine, [*form, {"action": "screenshot", "name": "typed"}], ctx)
    # Nor does the screenshot taken when a later step fails show it.
    with pytest.raises(StepFailed, match="#missing"):
        await run(engine, [*form, {"action": "click", "selector": "#missing", "timeout_ms": 300}], ctx)
    assert await artifact_rows(engine, ctx.task_id) == []

    # Once the form's page is left, screenshots are taken again; a page echoing the secret is read redacted.
    result = await run(engine, [*site.sign_up_steps(),
                                {"action": "extract", "selector": "#email", "name": "echoed"},
                                {"action": "screenshot", "name": "after"}], ctx)
    assert site.posted[-1]["email"] == [value]
    assert result["extracted"]["echoed"] == "[redacted]" and value not in json.dumps(result)
    rows = await artifact_rows(engine, ctx.task_id)
    assert [(r.name, r.data) for r in rows] == [("thanks", "Thanks, Ann"), ("echoed", "[redacted]"), ("after", None)]


async def test_wait_for_late_content_and_extract_text_attributes_and_lists(engine: AsyncEngine, site: Pages):
    result = await run(engine, [
        {"action": "navigate", "url": f"{site.url}/delayed"},
        {"action": "wait", "selector": "#late", "timeout_ms": 5000},
        {"action": "extract", "selector": "#late", "name": "late"},
        {"action": "navigate", "url": f"{site.url}/catalogue"},
        {"action": "wait", "ms": 50},
        {"action": "extract", "selector": "h1", "name": "heading"},
        {"action": "extract", "selector": "meta[name=price]", "attribute": "content", "name": "price"},
        {"action": "extract", "selector": "a.item", "attribute": "data-sku", "all": True, "name": "skus"},
        {"action": "extract", "selector": "a.item", "all": True, "name": "labels"},
        {"action": "extract", "selector": "a.item", "attribute": "data-missing", "name": "absent"},
    ])
    assert result["extracted"] == {"late": "Arrived", "heading": "Spring catalogue", "price": "42.50",
                                   "skus": ["A-1", "B-2", "C-3"], "labels": ["Anvil", "Bucket", "Crate"],
                                   "absent": None}


async def test_a_missing_selector_fails_its_step_by_index_and_cause_without_retry(engine: AsyncEngine, site: Pages):
    ctx = context(engine)
    with pytest.raises(StepFailed) as failed:
        await run(engine, [
            {"action": "navigate", "url": f"{site.url}/form"},
            {"action": "type", "selector": "#name", "text": "Ann"},
            {"action": "click", "selector": "#nowhere", "timeout_ms": 300},
            {"action": "screenshot", "name": "never"},
        ], ctx)
    assert str(failed.value) == "step 2 (click '#nowhere'): timed out after 300 ms waiting for the selector"
    # What the page showed when the step failed is kept; the later step never ran.
    rows = await artifact_rows(engine, ctx.task_id)
    assert [(r.step_index, r.name) for r in rows] == [(2, "failure")]
    assert rows[0].content is not None and rows[0].content.startswith(PNG)


async def test_a_missing_page_fails_and_an_unreachable_one_is_retried(engine: AsyncEngine, site: Pages):
    with pytest.raises(StepFailed, match=r"^step 0 \(navigate '.*/gone'\): .*/gone answered 404 Not Found$"):
        await run(engine, [{"action": "navigate", "url": f"{site.url}/gone"}])
    with pytest.raises(BrowserFailure, match=r"^step 0 \(navigate .*\): cannot connect to 127\.0\.0\.1 port \d+: "
                                             r"Connect call failed"):
        await run(engine, [{"action": "navigate", "url": f"http://127.0.0.1:{free_port()}/form"}])


async def test_a_browser_that_cannot_start_is_a_retryable_failure(engine: AsyncEngine, site: Pages, tmp_path: Path):
    with pytest.raises(BrowserFailure, match="cannot start Chromium"):
        await run(engine, [{"action": "navigate", "url": f"{site.url}/form"}],
                  context(engine, chromium=tmp_path / "no-chromium"))


async def test_the_page_cannot_make_chromium_fetch_a_refused_address(engine: AsyncEngine, site: Pages,
                                                                       internal: Pages):
    guard = RequestGuard(OutboundPolicy.from_entries(["127.0.0.1/32"]))
    result = await run(engine, [
        {"action": "navigate", "url": f"{site.url}/probe?target={internal.url}/secret"},
        {"action": "wait", "selector": "#status:not(:has-text('waiting'))", "timeout_ms": 10_000},
        {"action": "extract", "selector": "#status", "name": "status"},
    ], guard=guard)
    assert internal.paths == []  # not one request reached it
    assert result["extracted"]["status"] == "fetch failed, ws failed"
    refused = {r["url"].split("?via=")[1] for r in result["refused_requests"]}
    assert refused == {"script", "img", "frame", "fetch", "ws"}
    assert all("127.0.0.2 is a loopback address" in r["reason"] for r in result["refused_requests"])


async def test_a_navigation_or_redirect_to_a_refused_address_fails_the_step(engine: AsyncEngine, site: Pages,
                                                                            internal: Pages):
    with pytest.raises(StepRefused, match=r"^step 1 \(navigate 'http://127\.0\.0\.2:\d+/secret'\): .*refused: "
                                          r"127\.0\.0\.2 is a loopback address"):
        await run(engine, [{"action": "navigate", "url": f"{site.url}/form"},
                           {"action": "navigate", "url": f"{internal.url}/secret"}])
    with pytest.raises(StepRefused, match=r"^step 0 \(navigate .*/redirect.*\): http://127\.0\.0\.2:\d+/secret "
                                          r"refused: 127\.0\.0\.2 is a loopback address"):
        await run(engine, [{"action": "navigate", "url": f"{site.url}/redirect?to={internal.url}/secret"}])
    assert internal.paths == []
    # A redirect to an allowed address is followed.
    followed = await run(engine, [{"action": "navigate", "url": f"{site.url}/redirect?to={site.url}/items/2"}])
    assert followed["url"] == f"{site.url}/items/2" and followed["status"] == 200


async def test_a_second_attempt_overwrites_the_first_ones_artifacts(engine: AsyncEngine, site: Pages):
    ctx = context(engine)
    steps = [{"action": "navigate", "url": f"{site.url}/catalogue"},
             {"action": "extract", "selector": "h1", "name": "heading"},
             {"action": "screenshot", "name": "page"}]
    first = await run(engine, steps, ctx)
    second = await run(engine, steps, ctx)
    assert [a["id"] for a in first["artifacts"]] == [a["id"] for a in second["artifacts"]]
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(TaskArtifact.__table__)  # type: ignore
                                    .where(TaskArtifact.task_id == ctx.task_id))).scalar_one()
    assert count == 2


async def test_a_worker_runs_at_most_its_limit_of_browsers_at_once(engine: AsyncEngine, site: Pages, tmp_path: Path):
    settings = make_settings("sqlite://", tmp_path, browser_max_concurrent=1)

    draft = Draft(channel="browser", subject="", body="",
                  data={"steps": [{"action": "navigate", "url": f"{site.url}/hold"}]})
    async with httpx.AsyncClient() as http:
        def deliveries(task_id: str) -> DeliveryContext:
            return DeliveryContext(settings=settings, engine=engine, http=http, secrets=SecretStore(),
                                   task_id=task_id, task_type="browser", tenant_id="browser-tests",
                                   idempotency_key=f"{task_id}:send", attempt=1, timeout_seconds=60)

        first, second = await asyncio.gather(*(TRANSPORT.deliver(draft, deliveries(str(uuid.uuid4())))
                                               for _ in "ab"))
    assert first["title"] == second["title"] == "Held"
    # /hold lets a request go at once when a second arrives meanwhile: with one browser, none ever did.
    assert site.holding == ["start", "end", "start", "end"]
