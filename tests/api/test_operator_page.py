"""The /ui/tasks operator page as a person uses it: the API under uvicorn on a free port with a worker behind it
on the real dev server, driven by headless Chromium through Playwright (list, filter, page, open a timeline,
run now, cancel, retry); plus plain-HTTP checks of escaping, the forms' protection, roles and tenants. On every
configured database."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
from playwright.async_api import Page, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from tests.api.test_inbox_browser import Api, api, browser_page  # noqa: F401 - api is a fixture
from tests.api.test_keys_and_roles import make_key
from tests.conftest import served_api
from tests.helpers import eventually, form_token, free_port, task_body

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'


def _tomorrow() -> str:
    return (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()


async def _scheduled(api: Api, title: str, **fields) -> str:
    task_id = await api.create(title=title, due_at=_tomorrow(), **fields)
    await api.until(task_id, "scheduled")
    return task_id


async def _status_shows(page: Page, text: str) -> None:
    """The task page's status, reloading while the mirror catches up."""
    async def shown() -> str:
        await page.reload()
        return (await page.locator("#status").text_content()) or ""
    await eventually(shown, lambda s: s == text, timeout=20)


async def test_list_filter_page_and_open_a_timeline(api: Api):
    ids = [await _scheduled(api, f"Alpha {n}", subject_ref_id=f"ALPHA-{n}") for n in range(3)]
    hostile = await _scheduled(api, HOSTILE, payload=task_body()["payload"] | {"customer_name": HOSTILE})
    async with browser_page() as page:
        await page.goto(f"{api.url}/ui/tasks?tenant_id={api.tenant}&per_page=3")
        await expect(page.locator("#count")).to_have_text("4 tasks · page 1 of 2")
        await expect(page.locator("tr.task-row")).to_have_count(3)
        # Newest first: the hostile title, shown as text, never run.
        await expect(page.locator("tr.task-row").first.locator("a")).to_have_text(HOSTILE)
        await page.click("#next")
        await expect(page.locator("#count")).to_have_text("4 tasks · page 2 of 2")
        await expect(page.locator("tr.task-row")).to_have_count(1)
        assert await page.locator("tr.task-row").get_attribute("data-task-id") == ids[0]
        await page.click("#prev")
        await expect(page.locator("tr.task-row")).to_have_count(3)

        await page.fill("#filter-q", "alpha-1")  # the subject, in any case
        await page.click("#filters button[type=submit]")
        await expect(page.locator("tr.task-row")).to_have_count(1)
        assert await page.locator("tr.task-row").get_attribute("data-task-id") == ids[1]
        await page.fill("#filter-q", "")
        await page.select_option("#filter-status", "completed")
        await page.click("#filters button[type=submit]")
        await expect(page.locator("#count")).to_have_text("0 tasks")
        await page.select_option("#filter-status", "scheduled")
        await page.fill("#filter-type", "invoice_follow_up")
        await page.click("#filters button[type=submit]")
        await expect(page.locator("#count")).to_have_text("4 tasks · page 1 of 2")

        await page.locator("tr.task-row").first.locator("a").click()
        await expect(page.locator("#title")).to_have_text(HOSTILE)
        await expect(page.locator("#payload")).to_contain_text("<script>window.pwned = 1</script><img src=x")
        await expect(page.locator("#events tr.event[data-type=TASK_CREATED]")).to_have_count(1)
        await expect(page.locator("#runs tr.current")).to_contain_text("scheduled")
        assert page.url.endswith(f"/ui/tasks/{hostile}")
        assert await page.evaluate("window.pwned") is None
        assert await page.locator("body img").count() == 0 and await page.locator("body script").count() == 0
    for task_id in (*ids, hostile):
        await api.http.post(f"/tasks/{task_id}/cancel")


async def test_run_now_cancel_and_retry_from_the_page(api: Api, dev_env: WorkflowEnvironment):
    later = await _scheduled(api, "Due tomorrow")
    other = await _scheduled(api, "Also due tomorrow")
    closed = f"http://127.0.0.1:{free_port()}/nothing-listens"
    failing = (await api.http.post("/tasks", json={
        "type": "http_request", "tenant_id": api.tenant, "subject_ref_id": "HOOK-1", "title": "Call the CRM",
        "mode": "autonomous", "retry": {"max_attempts": 1},
        "payload": {"method": "POST", "url": closed, "json": {}}})).json()["id"]
    failed = await eventually(lambda: api.task(failing), lambda t: t["status"] == "failed", timeout=30)
    # The mirror reads failed a moment before the run has closed; a retry needs it closed.
    handle = dev_env.client.get_workflow_handle(failed["workflow_id"])
    await eventually(handle.describe, lambda d: d.status != WorkflowExecutionStatus.RUNNING)
    links = (await api.http.get(f"/tasks/{later}")).json()["links"]
    assert links["operator"].endswith(f"/ui/tasks/{later}")

    async with browser_page() as page:
        await page.goto(f"{api.url}/ui/tasks/{later}?as=olga")
        await expect(page.locator("#status")).to_have_text("scheduled")
        await expect(page.locator("button[value=retry]")).to_have_count(0)
        await page.click("button[value=run]")
        await expect(page.locator(".flash")).to_have_text("Task started now.")
        await _status_shows(page, "awaiting approval")
        await expect(page.locator("button[value=run]")).to_have_count(0)
        run_now = page.locator("#events tr.event[data-type=TASK_RESCHEDULED]")
        await expect(run_now).to_contain_text("olga")
        await expect(run_now).to_contain_text('"run_now": true')

        await page.goto(f"{api.url}/ui/tasks/{other}?as=olga")
        await page.fill("input[name=reason]", "not needed")
        await page.click("button[value=cancel]")
        await expect(page.locator(".flash")).to_have_text("Task cancelled.")
        await _status_shows(page, "cancelled")
        await expect(page.locator("form.actions")).to_have_count(0)
        await expect(page.locator("#events tr.event[data-type=TASK_CANCELLED]")).to_contain_text("not needed")

        await page.goto(f"{api.url}/ui/tasks/{failing}?as=olga")
        await expect(page.locator("#status")).to_have_text("failed")
        await expect(page.locator("#task-error")).not_to_be_empty()
        await page.click("button[value=retry]")
        await expect(page.locator(".flash")).to_have_text("A new run of the task started.")
        await expect(page.locator("#events tr.event[data-type=TASK_RETRIED]")).to_contain_text("olga")
        await expect(page.locator("#runs tr.current td").first).to_have_text("2")
    await eventually(lambda: api.task(failing), lambda t: t["run_number"] == 2 and t["status"] == "failed",
                     timeout=30)
    await api.http.post(f"/tasks/{later}/cancel")


async def test_forms_need_the_token_and_the_same_origin(api: Api):
    task_id = await _scheduled(api, "Guarded")
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as browser:
        page = await browser.get(f"/ui/tasks/{task_id}")
        assert page.status_code == 200 and "Run now" in page.text
        token = form_token(page.text)
        no_token = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "run"})
        assert no_token.status_code == 403 and "security token" in no_token.text
        other_site = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "run", "csrf": token},
                                        headers={"Origin": "https://evil.example"})
        assert other_site.status_code == 403
        unknown = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "explode", "csrf": token})
        assert unknown.status_code == 422
        assert (await api.task(task_id))["status"] == "scheduled"
        not_failed = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "retry", "csrf": token})
        assert not_failed.status_code == 409 and "Only a failed task can be retried" in not_failed.text
        missing = await browser.get("/ui/tasks/no-such-task")
        assert missing.status_code == 404 and "does not exist" in missing.text
        # A sign-in or sign-out form of more fields than it has is refused, not a server error.
        for path, status in (("/ui/tasks-login", 403), ("/ui/login", 403), ("/ui/logout", 303)):
            crowded = await browser.post(path, content=b"a&b&c&d&e&f",
                                         headers={"Content-Type": "application/x-www-form-urlencoded"})
            assert crowded.status_code == status, (path, crowded.status_code)  # a sign-out with no session: home
        ran = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "run", "csrf": token})
        assert ran.status_code == 303 and ran.headers["location"] == f"/ui/tasks/{task_id}?done=run"
        twice = await browser.post(f"/ui/tasks/{task_id}/act", data={"action": "run", "csrf": token})
        assert twice.status_code == 409 and "cannot run now" in twice.text
    await api.until(task_id, "awaiting_approval")
    await api.http.post(f"/tasks/{task_id}/cancel")


async def test_a_key_sees_its_own_tenant_and_a_viewer_cannot_act(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                                  tmp_path: Path):
    async with served_api(dev_env, engine, tmp_path, anonymous_access=False) as (url, _settings):
        tenant = f"op-{free_port()}"
        submitter = await make_key(engine, tenant, "sam", "submitter")
        viewer = await make_key(engine, tenant, "vera", "viewer")
        outsider = await make_key(engine, f"{tenant}-b", "bob", "submitter")
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            async def made(key: str, title: str) -> str:
                response = await http.post("/tasks", json=task_body(title=title, due_at=_tomorrow()),
                                           headers={"Authorization": f"Bearer {key}"})
                assert response.status_code == 201, response.text
                return response.json()["id"]
            ours, theirs = await made(submitter, "Ours"), await made(outsider, "Theirs")

        async def signed_in(key: str) -> httpx.AsyncClient:
            client = httpx.AsyncClient(base_url=url, timeout=30)
            form = await client.get("/ui/tasks")
            assert form.status_code == 401 and "Your API key" in form.text
            done = await client.post("/ui/tasks-login", data={"key": key, "csrf": form_token(form.text)})
            assert done.status_code == 303, done.text
            return client

        vera, sam = await signed_in(viewer), await signed_in(submitter)
        try:
            listed = await eventually(lambda: vera.get("/ui/tasks"), lambda r: "Ours" in r.text)
            assert "Theirs" not in listed.text
            assert (await vera.get(f"/ui/tasks/{theirs}")).status_code == 404
            page = await vera.get(f"/ui/tasks/{ours}")
            assert page.status_code == 200 and "Run now" not in page.text
            refused = await vera.post(f"/ui/tasks/{ours}/act", data={"action": "run", "csrf": form_token(
                (await sam.get(f"/ui/tasks/{ours}")).text)})
            assert refused.status_code == 403  # another session's token
            token = form_token(page.text)
            refused = await vera.post(f"/ui/tasks/{ours}/act", data={"action": "run", "csrf": token})
            assert refused.status_code == 403 and "submitter role" in refused.text
            assert (await sam.post(f"/ui/tasks/{theirs}/act", data={"action": "cancel", "csrf": form_token(
                (await sam.get(f"/ui/tasks/{ours}")).text)})).status_code == 404
            sam_token = form_token((await sam.get(f"/ui/tasks/{ours}")).text)
            cancelled = await sam.post(f"/ui/tasks/{ours}/act", data={"action": "cancel", "csrf": sam_token})
            assert cancelled.status_code == 303, cancelled.text
        finally:
            await vera.aclose()
            await sam.aclose()
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            theirs_now = await http.get(f"/tasks/{theirs}", headers={"Authorization": f"Bearer {outsider}"})
            assert theirs_now.json()["status"] == "scheduled"
            await http.post(f"/tasks/{theirs}/cancel", headers={"Authorization": f"Bearer {outsider}"})
