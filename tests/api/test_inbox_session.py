"""The inbox's sign-in: a server-side session good under /ui only, CSRF tokens and an Origin check on every
form, and the security headers every answer carries. Through the real app, with keys and no anonymous access."""

from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest_asyncio
from sqlalchemy import column, select, table, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.api.test_keys_and_roles import bearer, keys_command, make_key
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, form_token, sign_in, task_body, until_status

SESSION_COOKIE = "followthrough_session"
SESSIONS = table("inbox_sessions", column("id"), column("expires_at"))


@pytest_asyncio.fixture
async def keyed(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False) as running:
        yield running


class _AsKey:
    """What until_status needs (``.http.get``), with a key on every call."""

    def __init__(self, stack: Stack, key: str) -> None:
        self.http, self._stack, self._key = self, stack, key

    async def get(self, url: str, **kwargs):  # noqa: ANN201
        return await self._stack.http.get(url, headers=bearer(self._key), **kwargs)


def browser_for(stack: Stack) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=stack.http._transport, base_url="http://testserver")


async def waiting_task(stack: Stack, submitter: str) -> str:
    created = await stack.http.post("/tasks", headers=bearer(submitter), json=task_body(
        tenant_id=stack.tenant, approval={"approvers": ["fiona"]}))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    await until_status(_AsKey(stack, submitter), task_id, "awaiting_approval")
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}/approval", headers=bearer(submitter)),
                     lambda r: r.status_code == 200 and r.json()["status"] == "pending")
    return task_id


async def test_the_inbox_cookie_is_no_api_credential(keyed: Stack, engine: AsyncEngine):
    finance = await make_key(engine, keyed.tenant, "fiona", "approver", "viewer")
    async with browser_for(keyed) as browser:
        assert (await browser.get("/ui/events")).status_code == 401  # the live page's stream needs a session
        signed_in = await sign_in(browser, finance)
        assert signed_in.status_code == 303, signed_in.text
        cookie = signed_in.headers["set-cookie"]
        assert finance not in cookie and finance.split("_", 2)[2] not in cookie  # no part of the key in the browser
        assert f"{SESSION_COOKIE}=" in cookie and "path=/ui" in cookie.lower()
        assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
        session = browser.cookies[SESSION_COOKIE]
        assert (await browser.get("/ui")).status_code == 200

    # The session, sent to the JSON API (whatever path a browser would or would not send it on): 401.
    for cookies in ({SESSION_COOKIE: session}, {"followthrough_key": finance}):
        async with httpx.AsyncClient(transport=keyed.http._transport, base_url="http://testserver/api/v1",
                                     cookies=cookies) as api:
            refused = await api.get("/tasks")
            assert refused.status_code == 401, (cookies, refused.text)
            assert "API key is required" in refused.json()["detail"]
            assert (await api.get("/events/stream")).status_code == 401
    assert (await keyed.http.get("/tasks", headers=bearer(finance))).status_code == 200

    # Only a hash of the session id is stored.
    async with engine.connect() as conn:
        stored = [row.id for row in await conn.execute(select(SESSIONS))]
    assert session not in stored and all(len(s) == 64 for s in stored)


async def test_sign_in_needs_the_pages_token_and_the_same_origin(keyed: Stack, engine: AsyncEngine):
    finance = await make_key(engine, keyed.tenant, "fiona", "approver")
    async with browser_for(keyed) as browser:
        page = await browser.get("/ui")
        token = form_token(page.text)
        for data in ({"key": finance}, {"key": finance, "csrf": "forged"}):
            refused = await browser.post("/ui/login", data=data)
            assert refused.status_code == 403, refused.text
            assert "security token" in refused.text and SESSION_COOKIE not in refused.headers.get("set-cookie", "")
        # A page of another site posting the sign-in form (say with the attacker's own key: login CSRF).
        for headers in ({"Origin": "https://evil.example"}, {"Referer": "https://evil.example/page"},
                        {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"}):
            refused = await browser.post("/ui/login", data={"key": finance, "csrf": token}, headers=headers)
            assert refused.status_code == 403, (headers, refused.text)
            assert "another site" in refused.text
        # A fresh browser that never saw the page has no token cookie to match.
        async with browser_for(keyed) as other:
            assert (await other.post("/ui/login", data={"key": finance, "csrf": token})).status_code == 403
        signed_in = await browser.post("/ui/login", data={"key": finance, "csrf": token},
                                       headers={"Origin": "http://testserver"})
        assert signed_in.status_code == 303, signed_in.text


async def test_decisions_and_sign_out_need_the_sessions_token(keyed: Stack, engine: AsyncEngine):
    submitter = await make_key(engine, keyed.tenant, "sam", "submitter", "viewer")
    finance = await make_key(engine, keyed.tenant, "fiona", "approver")
    task_id = await waiting_task(keyed, submitter)
    async with browser_for(keyed) as browser:
        assert (await sign_in(browser, finance)).status_code == 303
        page = await browser.get("/ui")
        token = form_token(page.text)
        assert task_id in page.text and page.text.count(f'name="csrf" value="{token}"') >= 2  # sign-out + decide

        for data, headers in (({"action": "approve"}, {}), ({"action": "approve", "csrf": "x" * len(token)}, {}),
                              ({"action": "approve", "csrf": token}, {"Origin": "https://evil.example"})):
            refused = await browser.post(f"/ui/tasks/{task_id}/decide", data=data, headers=headers)
            assert refused.status_code == 403, refused.text
        status = (await keyed.http.get(f"/tasks/{task_id}", headers=bearer(submitter))).json()["status"]
        assert status == "awaiting_approval"

        # Another person's session token does not do either.
        async with browser_for(keyed) as other:
            assert (await sign_in(other, finance)).status_code == 303
            theirs = form_token((await other.get("/ui")).text)
        assert theirs != token
        refused = await browser.post(f"/ui/tasks/{task_id}/decide", data={"action": "approve", "csrf": theirs})
        assert refused.status_code == 403

        decided = await browser.post(f"/ui/tasks/{task_id}/decide", data={"action": "approve", "csrf": token},
                                     headers={"Origin": "http://testserver"})
        assert decided.status_code == 303, decided.text

        assert (await browser.post("/ui/logout")).status_code == 403
        session = browser.cookies[SESSION_COOKIE]
        assert (await browser.post("/ui/logout", data={"csrf": token})).status_code == 303
    # Signing out deleted the session: the old cookie, replayed, signs nobody in.
    async with httpx.AsyncClient(transport=keyed.http._transport, base_url="http://testserver",
                                 cookies={SESSION_COOKIE: session}) as replay:
        page = await replay.get("/ui")
        assert page.status_code == 401 and 'name="key"' in page.text
    await until_status(_AsKey(keyed, submitter), task_id, "completed")


async def test_a_session_ends_when_it_expires_or_its_key_is_revoked(keyed: Stack, engine: AsyncEngine):
    finance = await make_key(engine, keyed.tenant, "fiona", "approver")
    async with browser_for(keyed) as browser:
        assert (await sign_in(browser, finance)).status_code == 303
        assert (await browser.get("/ui")).status_code == 200
        async with engine.begin() as conn:
            await conn.execute(update(SESSIONS).values(
                expires_at=datetime.now(timezone.utc) - timedelta(seconds=1)))
        expired = await browser.get("/ui")
        assert expired.status_code == 401 and "sign in again" in expired.text

        assert (await sign_in(browser, finance)).status_code == 303
        assert (await browser.get("/ui")).status_code == 200
        key_id = finance.split("_")[1]
        revoked = await keys_command(engine, "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        assert (await browser.get("/ui")).status_code == 401


async def test_every_answer_carries_the_security_headers(keyed: Stack, engine: AsyncEngine):
    finance = await make_key(engine, keyed.tenant, "fiona", "approver", "viewer")
    async with browser_for(keyed) as browser:
        assert (await sign_in(browser, finance)).status_code == 303
        page = await browser.get("/ui")
        csp = page.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
        assert "form-action 'self'" in csp and "default-src 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "same-origin"
        assert page.headers["x-frame-options"] == "DENY"
        # Nothing inline the policy would block: every script and style is a file of /ui.
        assert "<script>" not in page.text and "<style" not in page.text and "style=" not in page.text
        for asset in ("/ui/live.js", "/ui/inbox.css"):
            served = await browser.get(asset)
            assert served.status_code == 200 and served.headers["x-content-type-options"] == "nosniff", asset
        refused = await browser.post("/ui/login", data={"key": finance})
        assert "frame-ancestors 'none'" in refused.headers["content-security-policy"]
    for answer in (await keyed.http.get("/tasks", headers=bearer(finance)), await keyed.http.get("/tasks"),
                   await keyed.http.get("/healthz")):
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]


async def test_a_dev_servers_json_api_refuses_what_another_site_posts(stack: Stack):
    """Under anonymous access the JSON API needs no key, so a page of another site could post to it from the
    browser of whoever runs the dev server: refused by its Origin; clients that name none are served."""
    missing = "00000000-0000-0000-0000-000000000000"
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Referer": "http://127.0.0.1:9/x"}):
        refused = await stack.http.post(f"/tasks/{missing}/cancel", json={}, headers=headers)
        assert refused.status_code == 403, (headers, refused.text)
        assert "another site" in refused.json()["detail"]
    assert (await stack.http.post(f"/tasks/{missing}/cancel", json={})).status_code == 404
    same = await stack.http.post(f"/tasks/{missing}/cancel", json={}, headers={"Origin": "http://testserver"})
    assert same.status_code == 404
