"""API keys with roles, and approvals decided by user id or team role.

Keys are made with the real ``followthrough keys`` command against the test's
database; the API then runs without anonymous access, so every call needs one.
"""

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from tests.conftest import Stack, running_stack
from tests.helpers import eventually, form_token, sign_in, task_body, until_status

ROOT = Path(__file__).resolve().parents[2]


async def keys_command(engine: AsyncEngine, *args: str) -> subprocess.CompletedProcess:
    """The real command, in a thread: the test's event loop runs the worker, whose mirror writes
    (and SQLite write lock) must not stall while the command waits for the database."""
    env = os.environ | {"FOLLOWTHROUGH_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "followthrough.cli", "keys", *args],
                                   env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


async def make_key(engine: AsyncEngine, tenant: str, user: str, *roles: str) -> str:
    made = await keys_command(engine, "create", "--tenant", tenant, "--user", user, "--name", f"{user}'s key",
                              *[a for r in roles for a in ("--role", r)])
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[1]
    assert token.startswith("ftk_")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest_asyncio.fixture
async def keyed(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(dev_env, engine, tmp_path, anonymous_access=False) as running:
        yield running


async def test_every_call_needs_a_valid_key_with_the_right_role(keyed: Stack, engine: AsyncEngine):
    viewer = await make_key(engine, keyed.tenant, "vera", "viewer")
    submitter = await make_key(engine, keyed.tenant, "sam", "submitter")

    missing = await keyed.http.get("/tasks")
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert "API key is required" in missing.json()["detail"]
    assert (await keyed.http.get("/tasks", headers={"X-Actor-Id": "admin"})).status_code == 401
    forged = viewer[:-4] + ("AAAA" if not viewer.endswith("AAAA") else "BBBB")
    assert (await keyed.http.get("/tasks", headers=bearer(forged))).status_code == 401
    assert (await keyed.http.get("/tasks", headers={"Authorization": "Basic abc"})).status_code == 401
    assert (await keyed.http.get("/healthz")).status_code in (200, 503)  # probes need no key

    assert (await keyed.http.get("/tasks", headers=bearer(viewer))).status_code == 200
    refused = await keyed.http.post("/tasks", json=task_body(tenant_id=keyed.tenant), headers=bearer(viewer))
    assert refused.status_code == 403 and "submitter" in refused.json()["detail"]
    created = await keyed.http.post("/tasks", json=task_body(tenant_id=keyed.tenant), headers={"X-API-Key": submitter})
    assert created.status_code == 201, created.text
    task = (await keyed.http.get(f"/tasks/{created.json()['id']}", headers=bearer(viewer))).json()
    assert task["created_by"] == "sam"
    assert (await keyed.http.get("/subscriptions", headers=bearer(submitter))).status_code == 403

    key_id = submitter.split("_")[1]
    listed = await keys_command(engine, "list", "--tenant", keyed.tenant)
    assert key_id in listed.stdout and "live" in listed.stdout and submitter not in listed.stdout
    revoked = await keys_command(engine, "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert (await keys_command(engine, "revoke", key_id)).returncode == 1  # already revoked
    assert (await keyed.http.get("/tasks", headers=bearer(submitter))).status_code == 401
    assert "revoked" in (await keys_command(engine, "list", "--tenant", keyed.tenant)).stdout


async def test_keys_command_refuses_a_key_without_an_api_role(engine: AsyncEngine):
    made = await keys_command(engine, "create", "--tenant", "t", "--user", "u", "--role", "finance")
    assert made.returncode == 2 and "at least one of the roles" in made.stderr
    bad = await keys_command(engine, "create", "--tenant", "t", "--user", "u", "--role", "viewer", "--role", "Fin Ance")
    assert bad.returncode == 2 and "role names" in bad.stderr


async def test_a_team_role_decides_and_others_are_refused_without_a_trace(keyed: Stack, engine: AsyncEngine):
    submitter = await make_key(engine, keyed.tenant, "sam", "submitter")
    outsider = await make_key(engine, keyed.tenant, "olga", "approver")
    finance = await make_key(engine, keyed.tenant, "fiona", "approver", "finance")
    created = await keyed.http.post("/tasks", headers=bearer(submitter), json=task_body(
        tenant_id=keyed.tenant, approval={"roles": ["finance"], "approvers": ["carl"]}))
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    await until_status(_Keyed(keyed.http, finance), task_id, "awaiting_approval")
    approval = await eventually(lambda: _get(keyed.http, f"/tasks/{task_id}/approval", finance),
                                lambda a: a.get("status") == "pending")
    assert (approval["approvers"], approval["approver_roles"]) == (["carl"], ["finance"])

    queue = await _get(keyed.http, "/approvals?approver=fiona&role=finance", finance)
    assert task_id in [a["task_id"] for a in queue["items"]]
    not_mine = await _get(keyed.http, f"/approvals?approver=olga&tenant_id={keyed.tenant}", outsider)
    assert task_id not in [a["task_id"] for a in not_mine["items"]]

    refused = await keyed.http.post(f"/tasks/{task_id}/approve", json={}, headers=bearer(outsider))
    assert refused.status_code == 403 and "may not decide" in refused.json()["detail"]
    wrong_role = await keyed.http.post(f"/tasks/{task_id}/approve", json={}, headers=bearer(submitter))
    assert wrong_role.status_code == 403 and "approver role" in wrong_role.json()["detail"]
    impostor = await keyed.http.post(f"/tasks/{task_id}/approve", json={"actor_id": "carl"}, headers=bearer(finance))
    assert impostor.status_code == 403 and "cannot decide as 'carl'" in impostor.json()["detail"]
    approval = await _get(keyed.http, f"/tasks/{task_id}/approval", finance)
    assert approval["decisions"] == [] and approval["status"] == "pending"

    approved = await keyed.http.post(f"/tasks/{task_id}/approve", json={"comment": "ok"}, headers=bearer(finance))
    assert approved.status_code == 200, approved.text
    await until_status(_Keyed(keyed.http, finance), task_id, "completed")
    approval = await eventually(lambda: _get(keyed.http, f"/tasks/{task_id}/approval", finance),
                                lambda a: a["status"] == "approved")
    assert [(d["actor_id"], d["decision"]) for d in approval["decisions"]] == [("fiona", "approve")]


async def test_the_inbox_signs_in_with_a_key_and_decides_as_its_user(keyed: Stack, engine: AsyncEngine):
    submitter = await make_key(engine, keyed.tenant, "sam", "submitter")
    finance = await make_key(engine, keyed.tenant, "fiona", "approver", "finance")
    viewer = await make_key(engine, keyed.tenant, "vera", "viewer")
    created = await keyed.http.post("/tasks", headers=bearer(submitter), json=task_body(
        tenant_id=keyed.tenant, approval={"roles": ["finance"]}))
    task_id = created.json()["id"]
    await until_status(_Keyed(keyed.http, finance), task_id, "awaiting_approval")
    await eventually(lambda: _get(keyed.http, f"/tasks/{task_id}/approval", finance),
                     lambda a: a.get("status") == "pending")

    async with httpx.AsyncClient(transport=keyed.http._transport, base_url="http://testserver") as browser:
        page = await browser.get("/ui")
        assert page.status_code == 401 and 'name="key"' in page.text
        bad = await sign_in(browser, "ftk_nope")
        assert bad.status_code == 401 and "not valid" in bad.text
        # A key without the approver role gets no session at all.
        viewing = await sign_in(browser, viewer)
        assert viewing.status_code == 403 and "approver role" in viewing.text
        assert (await browser.get("/ui")).status_code == 401

        signed_in = await sign_in(browser, finance)
        assert signed_in.status_code == 303
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await browser.get("/ui")
        assert page.status_code == 200 and "Inbox of fiona" in page.text and task_id in page.text
        assert "anyone with the role finance" in page.text
        decided = await browser.post(f"/ui/tasks/{task_id}/decide",
                                     data={"action": "approve", "as": "someone-else", "csrf": form_token(page.text)})
        assert decided.status_code == 303, decided.text

    await until_status(_Keyed(keyed.http, finance), task_id, "completed")
    approval = await eventually(lambda: _get(keyed.http, f"/tasks/{task_id}/approval", finance),
                                lambda a: a["status"] == "approved")
    assert [d["actor_id"] for d in approval["decisions"]] == ["fiona"]


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_anonymous_access_is_refused_off_loopback(host: str, tmp_path: Path):
    env = os.environ | {"FOLLOWTHROUGH_ANONYMOUS_ACCESS": "true", "FOLLOWTHROUGH_API_HOST": host,
                        "FOLLOWTHROUGH_DATA_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "followthrough.cli", "api"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "only allowed on 127.0.0.1" in run.stderr


class _Keyed:
    """What until_status needs (``.http``), with a key on every call."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self.http = _WithKey(http, token)


class _WithKey:
    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http, self._headers = http, bearer(token)

    async def get(self, url: str, **kwargs):
        return await self._http.get(url, headers=self._headers, **kwargs)


async def _get(http: httpx.AsyncClient, url: str, token: str) -> dict:
    response = await http.get(url, headers=bearer(token))
    return response.json() if response.status_code == 200 else {}


async def test_a_credential_pasted_into_any_payload_is_refused_with_directions(stack):
    from tests.helpers import invoice_payload

    for payload, where in ((invoice_payload(api_key="sk-live-123"), ["body", "payload", "api_key"]),
                           ({"to": ["a@acme.example"], "subject": "Hi", "body": "Hi",
                             "variables": {"login": {"Password": "hunter2"}}},
                            ["body", "payload", "variables", "login", "Password"])):
        body = task_body(tenant_id=stack.tenant, payload=payload) | (
            {"type": "email"} if "to" in payload else {})
        refused = await stack.http.post("/tasks", json=body)
        assert refused.status_code == 422, refused.text
        [error] = refused.json()["detail"]
        assert error["loc"] == where and "FOLLOWTHROUGH_TASK_SECRETS_FILE" in error["msg"]
        assert "hunter2" not in refused.text and "sk-live-123" not in refused.text
    definition = await stack.http.post("/definitions", json={
        "name": "with-a-password", "type": "email", "tenant_id": stack.tenant,
        "payload": {"to": ["a@acme.example"], "subject": "Hi", "body": "Hi", "variables": {"password": "x"}}})
    assert definition.status_code == 422 and definition.json()["detail"][0]["type"] == "raw_credential"
