"""The /ui inbox as a person uses it: the API under uvicorn on a free port with a worker behind it,
driven by headless Chromium through Playwright; plus plain-HTTP checks of escaping and of whose
queue is shown. On every configured database."""

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest_asyncio
from playwright.async_api import Browser, Page, async_playwright, expect
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import served_api
from tests.helpers import eventually, form_token, get_task, outbox_rows, task_body, until_status

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@dataclass
class Api:
    url: str
    http: httpx.AsyncClient
    engine: AsyncEngine
    tenant: str

    async def create(self, **overrides: Any) -> str:
        body = task_body(tenant_id=self.tenant, approval={"approvers": ["alice"]}) | overrides
        response = await self.http.post("/tasks", json=body)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def task(self, task_id: str) -> dict:
        return await get_task(self, task_id)

    async def until(self, task_id: str, status: str) -> dict:
        return await until_status(self, task_id, status)

    async def waiting(self, **overrides: Any) -> dict:
        """A task awaiting alice's decision, with its approval request in the mirror."""
        task_id = await self.create(**overrides)
        task = await self.until(task_id, "awaiting_approval")
        await eventually(lambda: self.http.get(f"/tasks/{task_id}/approval"), lambda r: r.status_code == 200)
        return task

    def inbox(self, who: str = "alice") -> str:
        return f"{self.url}/ui?as={who}&tenant_id={self.tenant}"


@pytest_asyncio.fixture
async def api(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Api]:
    """The API under uvicorn on a free port, with a worker on the same settings."""
    async with served_api(dev_env, engine, tmp_path) as (url, settings):
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            yield Api(url, http, engine, f"inbox-{url.rsplit(':', 1)[1]}-{id(settings)}")


@asynccontextmanager
async def browser_page() -> AsyncIterator[Page]:
    assert CHROMIUM.exists(), (f"{CHROMIUM} is missing: the inbox browser tests need Debian's chromium "
                               f"(`apt-get install -y chromium`, or `python3 run.py test`, which installs it as root)")
    async with async_playwright() as p:
        browser: Browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            page.set_default_timeout(20_000)
            yield page
        finally:
            await browser.close()


async def test_approve_with_an_edited_body_from_the_inbox(api: Api):
    task = await api.waiting()
    task_id = task["id"]
    drafted = task["draft"]["body"]
    edited = "Dear ACME,\n\nplease settle INV-123 this week.\n\nThanks, Alice"
    assert drafted and drafted != edited

    async with browser_page() as page:
        await page.goto(api.inbox())
        card = page.locator(f"#task-{task_id}")
        await expect(card).to_contain_text("Follow up on INV-123")
        run_link = await card.get_by_role("link", name="open run").get_attribute("href")
        assert run_link and run_link.endswith(f"/workflows/{task['workflow_id']}"), run_link
        body = card.locator("textarea[name=body]")
        assert (await body.input_value()).replace("\r\n", "\n") == drafted
        assert await card.locator("input[name=subject]").input_value() == task["draft"]["subject"]
        await body.fill(edited)
        await card.get_by_role("button", name="Approve").click()

        await page.wait_for_url("**/ui?*outcome=approved*")
        await expect(page.locator(".flash")).to_contain_text(f"You approved task {task_id}")
        await expect(page.locator(f"#task-{task_id}")).to_have_count(0)
        await expect(page.locator("body")).to_contain_text("Nothing awaits your decision.")

    done = await api.until(task_id, "completed")
    assert done["draft"]["body"] == edited, done["draft"]
    approval = (await api.http.get(f"/tasks/{task_id}/approval")).json()
    assert approval["status"] == "approved"
    assert [(d["actor_id"], d["decision"]) for d in approval["decisions"]] == [("alice", "approve")]
    assert approval["decisions"][0]["edited"]["body"] == edited
    assert [row.body for row in await outbox_rows(api.engine, task_id)] == [edited]


async def test_manual_task_marked_done_from_the_inbox(api: Api):
    task = await api.waiting(mode="manual")
    task_id = task["id"]
    assert task["stage"] == "awaiting_person"

    async with browser_page() as page:
        await page.goto(api.inbox())
        card = page.locator(f"#task-{task_id}")
        await expect(card).to_contain_text("manual task")
        await expect(card.get_by_role("button", name="Approve")).to_have_count(0)
        await card.locator("textarea[name=result]").fill("called them; they pay on Friday")
        await card.get_by_role("button", name="Mark done").click()

        await page.wait_for_url("**/ui?*outcome=completed*")
        await expect(page.locator(".flash")).to_contain_text(f"You marked task {task_id} done")
        await expect(page.locator(f"#task-{task_id}")).to_have_count(0)

    done = await api.until(task_id, "completed")
    assert done["result"]["result"] == {"note": "called them; they pay on Friday"}
    assert done["result"]["done_by"] == "alice"


async def test_reject_needs_a_reason(api: Api):
    task = await api.waiting()
    task_id = task["id"]

    async with browser_page() as page:
        await page.goto(api.inbox())
        card = page.locator(f"#task-{task_id}")
        # Without a reason: the inbox again, with the error and the task still there.
        async with page.expect_response(lambda r: r.url.endswith(f"/ui/tasks/{task_id}/decide")) as answer:
            await card.get_by_role("button", name="Reject").click()
        assert (await answer.value).status == 422
        await expect(page.locator(".error")).to_contain_text("a reason is required to reject")
        card = page.locator(f"#task-{task_id}")
        await expect(card).to_have_count(1)
        assert (await api.task(task_id))["status"] == "awaiting_approval"

        await card.locator("textarea[name=reason]").fill("wrong customer")
        await card.get_by_role("button", name="Reject").click()
        await page.wait_for_url("**/ui?*outcome=rejected*")
        await expect(page.locator(".flash")).to_contain_text(f"You rejected task {task_id}")
        await expect(page.locator(f"#task-{task_id}")).to_have_count(0)

    await api.until(task_id, "rejected")
    approval = (await api.http.get(f"/tasks/{task_id}/approval")).json()
    assert approval["status"] == "rejected"
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval["decisions"]] == [
        ("alice", "reject", "wrong customer")]


async def test_inbox_escapes_html_and_shows_only_the_callers_queue(api: Api):
    title = '<script>alert("x")</script> & <b>bold</b>'
    task = await api.waiting(title=title)
    task_id = task["id"]

    async with httpx.AsyncClient(base_url=api.url, timeout=30) as http:
        page = await http.get("/ui", params={"as": "alice", "tenant_id": api.tenant})
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f'id="task-{task_id}"' in page.text
        assert "<script>" not in page.text and "<b>bold</b>" not in page.text
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page.text

        bob = await http.get("/ui", params={"as": "bob", "tenant_id": api.tenant})
        assert bob.status_code == 200
        assert task_id not in bob.text and "alert" not in bob.text
        assert "Nothing awaits your decision." in bob.text

        # A form without the page's token is refused, whoever it names: 403, nothing decided.
        token = form_token(page.text)
        for forged in ({"as": "alice", "action": "approve"}, {"as": "alice", "action": "approve", "csrf": "x" * 43}):
            refused = await http.post(f"/ui/tasks/{task_id}/decide", data=forged)
            assert refused.status_code == 403 and "security token" in refused.text, refused.text
        # bob cannot decide alice's task through the page either: 403, nothing decided.
        refused = await http.post(f"/ui/tasks/{task_id}/decide", data={"as": "bob", "action": "approve",
                                                                        "csrf": token})
        assert refused.status_code == 403, refused.text
        assert "bob may not decide" in refused.text and "<script>" not in refused.text

        nobody = await http.get("/ui")
        assert nobody.status_code == 200 and "Who are you?" in nobody.text

        header = await http.get("/ui", params={"tenant_id": api.tenant}, headers={"X-Actor-Id": "alice"})
        assert f'id="task-{task_id}"' in header.text

        flashed = await http.get("/ui", params={"as": "alice", "done": "<i>x</i>", "outcome": "approved"})
        assert "<i>x</i>" not in flashed.text and "&lt;i&gt;x&lt;/i&gt;" in flashed.text

        approved = await http.post(f"/ui/tasks/{task_id}/decide",
                                   data={"as": "alice", "action": "approve", "tenant_id": api.tenant, "csrf": token})
        assert approved.status_code == 303
        assert approved.headers["location"].startswith("/ui?as=alice&tenant_id=")
        again = await http.post(f"/ui/tasks/{task_id}/decide", data={"as": "alice", "action": "approve",
                                                                      "csrf": token})
        assert again.status_code == 409, again.text
    await api.until(task_id, "completed")


async def test_a_task_decided_elsewhere_leaves_an_open_inbox_and_a_new_one_arrives(api: Api):
    first, second = await api.waiting(), await api.waiting()

    async with browser_page() as page:
        await page.goto(api.inbox())
        await expect(page.locator("section.task")).to_have_count(2)
        await expect(page.locator("body")).to_have_attribute("data-live", "on")  # the event stream is open
        loaded = await page.evaluate("performance.timeOrigin")

        decided = await api.http.post(f"/tasks/{first['id']}/approve", json={"actor_id": "alice"})
        assert decided.status_code == 200, decided.text
        await expect(page.locator(f"#task-{first['id']}")).to_have_count(0)
        await expect(page.locator("#count")).to_contain_text("1 task awaiting your decision")
        assert await page.evaluate("performance.timeOrigin") == loaded  # no reload: the card was taken out

        # A new request for alice reloads the page, which shows it.
        third = await api.create()
        await expect(page.locator(f"#task-{third}")).to_have_count(1, timeout=30_000)
        await expect(page.locator(f"#task-{second['id']}")).to_have_count(1)

    await api.until(first["id"], "completed")


@contextmanager
def attacker_page(body: str) -> Iterator[str]:
    """``body`` served at a URL of another origin than the inbox's (another port on 127.0.0.1)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/attack"
    finally:
        server.shutdown()
        server.server_close()


async def test_the_inbox_runs_under_its_policy_and_refuses_another_sites_form_and_frame(api: Api):
    task = await api.waiting()
    task_id = task["id"]
    attack = f"""<!doctype html><html><body>
<iframe id="framed" src="{api.inbox()}"></iframe>
<form id="forged" method="post" action="{api.url}/ui/tasks/{task_id}/decide">
<input name="as" value="alice"><input name="action" value="approve"></form>
</body></html>"""

    async with browser_page() as page:
        violations: list[str] = []
        page.on("console", lambda message: violations.append(message.text)
                if "Content Security Policy" in message.text else None)
        await page.goto(api.inbox())
        await expect(page.locator("body")).to_have_attribute("data-live", "on")  # live.js ran, its stream is open
        # The stylesheet applied: the page's style is a file of /ui, not inline.
        assert await page.locator(f"#task-{task_id}").evaluate("e => getComputedStyle(e).borderTopStyle") == "solid"
        assert violations == []

        # Another site's page (another origin on this loopback address): it frames the inbox and posts a
        # decision into it.
        with attacker_page(attack) as evil:
            await page.goto(evil, wait_until="load")  # "load" waits for the frame too
            framed = await (await page.wait_for_selector("#framed")).content_frame()
            assert framed is not None
            assert "Follow up on INV-123" not in await framed.content()
            async with page.expect_response(lambda r: r.url.endswith(f"/ui/tasks/{task_id}/decide")) as answer:
                await page.evaluate("document.getElementById('forged').submit()")
            refused = await answer.value
            assert refused.status == 403
            assert "another site" in await refused.text()
    assert (await api.task(task_id))["status"] == "awaiting_approval"
    decided = await api.http.post(f"/tasks/{task_id}/approve", json={"actor_id": "alice"})
    assert decided.status_code == 200, decided.text
    await api.until(task_id, "completed")


async def test_an_approval_link_page_posts_its_form_with_this_servers_origin(api: Api):
    """The link page's form is refused when another site posts it, so a browser must send this server's
    Origin with it: the page's referrer policy may not be no-referrer (that makes it "Origin: null")."""
    task = await api.waiting()
    links = await api.http.post(f"/tasks/{task['id']}/approval-links", json={"approver": "alice"})
    assert links.status_code == 201, links.text
    path = "/api/v1/approval-links/" + links.json()["approve"].rsplit("/approval-links/", 1)[1]

    async with browser_page() as page:
        await page.goto(f"{api.url}{path}")
        await page.locator("textarea[name=comment]").fill("fine by me")
        async with page.expect_response(lambda r: r.request.method == "POST") as answer:
            await page.get_by_role("button", name="Approve").click()
        assert (await answer.value).status == 200, await (await answer.value).text()
        await expect(page.locator("h1")).to_have_text("Approved")
    await api.until(task["id"], "completed")


async def test_sign_in_decide_and_sign_out_with_a_key(dev_env: WorkflowEnvironment, engine: AsyncEngine,
                                                      tmp_path: Path):
    """Without anonymous access: a person signs in with a key, the live page follows its session's events,
    decides, signs out; the browser never holds the key, and the session is worth nothing after."""
    from followthrough.db import api_keys
    async with served_api(dev_env, engine, tmp_path, anonymous_access=False) as (url, _):
        tenant = f"keyed-{url.rsplit(':', 1)[1]}"
        _, submitter = await api_keys.create(engine, tenant_id=tenant, actor_id="sam", name="sam",
                                             roles=["submitter", "viewer"])
        _, alice = await api_keys.create(engine, tenant_id=tenant, actor_id="alice", name="alice",
                                         roles=["approver"])
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30,
                                     headers={"Authorization": f"Bearer {submitter}"}) as http:
            api = Api(url, http, engine, tenant)
            first, second = await api.waiting(), await api.waiting()

            async with browser_page() as page:
                await page.goto(f"{url}/ui")
                await page.locator("#key").fill(alice)
                await page.get_by_role("button", name="Sign in").click()
                await expect(page.locator(".whoami")).to_contain_text("Signed in as alice")
                await expect(page.locator("section.task")).to_have_count(2)
                await expect(page.locator("body")).to_have_attribute("data-live", "on")  # /ui/events, by session
                cookies = {c["name"]: c for c in await page.context.cookies()}
                assert cookies["followthrough_session"]["path"] == "/ui" and cookies["followthrough_session"]["httpOnly"]
                assert all(alice not in c["value"] for c in cookies.values())

                # Decided elsewhere: the open page drops the card, its stream authorised by the session.
                decided = await api.http.post(f"/tasks/{first['id']}/approve", json={},
                                              headers={"Authorization": f"Bearer {alice}"})
                assert decided.status_code == 200, decided.text
                await expect(page.locator(f"#task-{first['id']}")).to_have_count(0)

                await page.locator(f"#task-{second['id']}").get_by_role("button", name="Approve").click()
                await page.wait_for_url("**/ui?*outcome=approved*")
                await expect(page.locator(".flash")).to_contain_text(f"You approved task {second['id']}")

                session = {c["name"]: c["value"] for c in await page.context.cookies()}["followthrough_session"]
                await page.get_by_role("button", name="Sign out").click()
                await expect(page.locator("#key")).to_be_visible()
                assert "followthrough_session" not in {c["name"] for c in await page.context.cookies()}

        async with httpx.AsyncClient(base_url=url, cookies={"followthrough_session": session}) as replay:
            assert (await replay.get("/ui")).status_code == 401
            assert (await replay.get("/api/v1/tasks")).status_code == 401
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30,
                                     headers={"Authorization": f"Bearer {submitter}"}) as http:
            api = Api(url, http, engine, tenant)
            await api.until(first["id"], "completed")
            await api.until(second["id"], "completed")
