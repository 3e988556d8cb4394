"""Signed approval links: GET shows a page and changes nothing, POST decides once, and only the
approval request the link was made for."""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from followthrough.infra import approval_links
from tests.conftest import Stack, running_stack
from tests.helpers import eventually, get_task, task_body, until_status
from tests.llm_server import FakeLlm, llm  # noqa: F401 - llm is a fixture
from tests.receivers import Receiver


async def _awaiting(stack: Stack, **fields) -> str:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant) | fields)
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]
    await until_status(stack, task_id, "awaiting_approval")
    return task_id


async def _links(stack: Stack, task_id: str, approver: str = "alice", **body) -> dict:
    response = await stack.http.post(f"/tasks/{task_id}/approval-links", json={"approver": approver} | body)
    assert response.status_code == 201, response.text
    return response.json()


def _path(url: str) -> str:
    """The link as the test client wants it: relative to its /api/v1 base."""
    assert url.startswith("http://testserver/api/v1/approval-links/")
    return urlsplit(url).path.removeprefix("/api/v1")


async def _approval(stack: Stack, task_id: str) -> dict:
    response = await stack.http.get(f"/tasks/{task_id}/approval")
    assert response.status_code == 200, response.text
    return response.json()


async def test_get_shows_the_draft_and_post_approves_once(stack: Stack):
    task_id = await _awaiting(stack, approval={"approvers": ["alice", "bob"]})
    links = await _links(stack, task_id)
    approve = _path(links["approve"])

    for _ in range(2):  # a mail scanner fetching the link decides nothing
        page = await stack.http.get(approve)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Follow up on INV-123" in page.text and "INV-123" in page.text
        assert 'method="post"' in page.text and "Approve" in page.text
        task = await get_task(stack, task_id)
        assert task["draft"]["subject"] in page.text.replace("&#39;", "'").replace("&amp;", "&")
    await asyncio.sleep(0.5)
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"

    done = await stack.http.post(approve, data={"comment": "looks <good>"})
    assert done.status_code == 200, done.text
    assert "You approved this task" in done.text
    await until_status(stack, task_id, "completed")
    events = (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]
    approved = [e for e in events if e["type"] == "TASK_APPROVED"]
    assert len(approved) == 1 and approved[0]["actor_id"] == "alice"
    approval = await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "approved")
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval["decisions"]] == [
        ("alice", "approve", "looks <good>")]

    again = await stack.http.post(approve, data={"comment": "again"})
    assert again.status_code == 409 and "already been used" in again.text
    assert "This task was already approved" in again.text
    # The reject link of the same pair is spent with it.
    late = await stack.http.post(_path(links["reject"]), data={"reason": "too late"})
    assert late.status_code == 409 and "already been used" in late.text and "already approved" in late.text


async def test_reject_link_needs_a_reason_and_rejects(stack: Stack):
    task_id = await _awaiting(stack)
    reject = _path((await _links(stack, task_id, "bob"))["reject"])
    page = await stack.http.get(reject)
    assert page.status_code == 200 and 'name="reason"' in page.text and "required" in page.text
    missing = await stack.http.post(reject, data={"reason": "  "})
    assert missing.status_code == 422 and "reason" in missing.text
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    done = await stack.http.post(reject, data={"reason": "customer already paid"})
    assert done.status_code == 200 and "You rejected this task" in done.text
    await until_status(stack, task_id, "rejected")
    approval = await eventually(lambda: _approval(stack, task_id), lambda a: a["status"] == "rejected")
    assert [(d["actor_id"], d["decision"], d["comment"]) for d in approval["decisions"]] == [
        ("bob", "reject", "customer already paid")]


async def test_tampered_expired_and_refused_links(stack: Stack):
    task_id = await _awaiting(stack, approval={"approvers": ["alice"]})
    approve = _path((await _links(stack, task_id))["approve"])
    token = approve.rsplit("/", 1)[1]
    flipped = token[:5] + ("A" if token[5] != "A" else "B") + token[6:]
    for bad in (flipped, token[:-2] + ("xy" if token[-2:] != "xy" else "zz"), "garbage", "a.b.c"):
        assert (await stack.http.get(f"/approval-links/{bad}")).status_code == 401
        response = await stack.http.post(f"/approval-links/{bad}", data={"comment": "hi"})
        assert response.status_code == 401 and "not valid" in response.text

    key = approval_links.signing_key(stack.settings)
    request = (await _approval(stack, task_id))["id"]
    expired = approval_links.mint(key, task_id, "alice", "approve", int(time.time()) - 1, approval_id=request)
    assert (await stack.http.get(f"/approval-links/{expired}")).status_code == 410
    response = await stack.http.post(f"/approval-links/{expired}", data={})
    assert response.status_code == 410 and "expired" in response.text
    # Signed with another key: refused as tampered.
    forged = approval_links.mint(b"another key", task_id, "alice", "approve", int(time.time()) + 60,
                                  approval_id=request)
    assert (await stack.http.post(f"/approval-links/{forged}", data={})).status_code == 401

    outsider = await stack.http.post(f"/tasks/{task_id}/approval-links", json={"approver": "mallory"})
    assert outsider.status_code == 403 and "mallory" in outsider.json()["detail"]
    # A link minted past the API for someone not allowed: the workflow's 403 comes through as a page.
    sneaky = approval_links.mint(key, task_id, "mallory", "approve", int(time.time()) + 60, approval_id=request)
    refused = await stack.http.post(f"/approval-links/{sneaky}", data={})
    assert refused.status_code == 403 and "may not decide" in refused.text
    assert (await stack.http.post("/tasks/nope/approval-links", json={"approver": "alice"})).status_code == 404
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"

    assert (await stack.http.post(approve, data={})).status_code == 200
    await until_status(stack, task_id, "completed")
    closed = await stack.http.post(f"/tasks/{task_id}/approval-links", json={"approver": "alice"})
    assert closed.status_code == 409


async def test_fifty_concurrent_posts_decide_once(stack: Stack):
    task_id = await _awaiting(stack)
    approve = _path((await _links(stack, task_id, "carol", ttl_seconds=600))["approve"])
    responses = await asyncio.gather(*(stack.http.post(approve, data={"comment": f"n{i}"}) for i in range(50)))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 49, codes
    await until_status(stack, task_id, "completed")
    events = [e["type"] for e in (await stack.http.get(f"/tasks/{task_id}/events")).json()["items"]]
    assert events.count("TASK_APPROVED") == 1


def test_tokens_check_and_the_generated_key_is_private(tmp_path):
    from followthrough.config.settings import Settings

    settings = Settings(data_dir=tmp_path)
    key = approval_links.signing_key(settings)
    assert approval_links.signing_key(settings) == key and len(key) == 32
    assert (tmp_path / "approval-link.key").stat().st_mode & 0o777 == 0o600
    token = approval_links.mint(key, "t1", "alice", "reject", 2_000_000_000, approval_id="run-1:4")
    link = approval_links.check(key, token, now=1_999_999_999)
    assert (link.task_id, link.approval_id, link.approver, link.decision) == ("t1", "run-1:4", "alice", "reject")
    # The two links of a pair share one nonce: using either spends both.
    approve, reject, _ = approval_links.mint_pair(key, "t1", "run-1:4", "alice", 60, now=1_999_999_000)
    assert approval_links.check(key, approve, now=0).nonce == approval_links.check(key, reject, now=0).nonce
    with pytest.raises(ValueError):
        approval_links.mint(key, "t1", "alice", "approve", 2_000_000_000, approval_id="")
    with pytest.raises(approval_links.ExpiredToken):
        approval_links.check(key, token, now=2_000_000_000)
    with pytest.raises(approval_links.InvalidToken):
        approval_links.check(b"other", token, now=0)
    with pytest.raises(approval_links.InvalidToken):
        approval_links.check(key, token + "x", now=0)


def test_a_named_secret_signs_the_links(tmp_path, monkeypatch):
    from followthrough.config.settings import Settings

    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LINK_KEY", "s3cret")
    settings = Settings(data_dir=tmp_path, approval_link_secret="link_key")
    assert approval_links.signing_key(settings) == b"s3cret"
    assert not (tmp_path / "approval-link.key").exists()


def test_an_empty_named_secret_signs_nothing(tmp_path, monkeypatch):
    """An empty key would let anyone sign a link: refused, as compose renders it when FOLLOWTHROUGH_LINK_KEY
    is not set."""
    from followthrough.config.settings import Settings

    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LINK_1", " ")
    with pytest.raises(ValueError, match="'link_1' that signs approval links"):
        approval_links.signing_key(Settings(data_dir=tmp_path, approval_link_secret="link_1"))


def test_a_generated_key_outside_a_dev_setup_is_warned_about(tmp_path):
    from followthrough.config.settings import Settings

    warning = approval_links.generated_key_warning(Settings(data_dir=tmp_path))
    assert warning and str(tmp_path / "approval-link.key") in warning
    assert "FOLLOWTHROUGH_APPROVAL_LINK_SECRET" in warning and "FOLLOWTHROUGH_SECRET_LINK_1" in warning
    assert approval_links.generated_key_warning(Settings(data_dir=tmp_path, approval_link_secret="k")) is None
    assert approval_links.generated_key_warning(Settings(data_dir=tmp_path, anonymous_access=True)) is None


async def test_the_api_and_the_worker_warn_at_start_of_a_key_of_their_own(dev_env: WorkflowEnvironment,
                                                                          sqlite_engine: AsyncEngine, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture):
    caplog.set_level("WARNING")
    from followthrough.worker import run_worker

    def warned() -> list[str]:
        return sorted(r.name for r in caplog.records if "verifies only in processes that share" in r.message)

    stop = asyncio.Event()
    stop.set()  # the worker starts, then stops at once
    address = dev_env.client.service_client.config.target_host
    for secret, expected in (("", ["followthrough.api", "followthrough.worker"]), ("link_key", [])):
        caplog.clear()
        async with running_stack(dev_env, sqlite_engine, tmp_path, anonymous_access=False,
                                 approval_link_secret=secret) as stack:
            await run_worker(stack.settings.model_copy(update={"temporal_address": address}), stop)
        assert warned() == expected, (secret, warned())


@pytest.mark.parametrize("command", ["worker", "api"])
def test_worker_and_api_refuse_to_start_with_an_empty_or_missing_link_key(command: str, tmp_path: Path):
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_DATA_DIR": str(tmp_path), "FOLLOWTHROUGH_CODEC": "off",
        "FOLLOWTHROUGH_APPROVAL_LINK_SECRET": "link_1"}
    for given in ({"FOLLOWTHROUGH_SECRET_LINK_1": ""}, {}):
        done = subprocess.run([sys.executable, "-m", "followthrough.cli", command], env=env | given, cwd=root,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (given, done.stderr)
        assert done.stderr.count("\n") == 1 and "'link_1'" in done.stderr, done.stderr


# ---- a link decides only the approval request it was made for ------------------------------------------

@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


async def _pending(stack: Stack, task_id: str, other_than: str | None = None) -> dict:
    """The task's open approval request (a new one, when ``other_than`` names the one before)."""
    async def probe() -> dict | None:
        response = await stack.http.get(f"/tasks/{task_id}/approval")
        return response.json() if response.status_code == 200 else None
    return await eventually(probe, lambda a: a is not None and a["status"] == "pending" and a["id"] != other_than,
                            timeout=30)


async def test_an_unused_link_from_a_failed_run_cannot_decide_its_retry(stack: Stack, receiver: Receiver):
    receiver.answer(400, '{"error": "unknown customer"}')  # the first run's send is refused: the task fails
    created = await stack.http.post("/tasks", json={
        "type": "http_request", "tenant_id": stack.tenant, "subject_ref_id": uuid.uuid4().hex,
        "payload": {"method": "POST", "url": f"{receiver.url}/notes", "json": {"text": "paid"}},
        "approval": {"approvers": ["alice", "bob"]}})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    first = await _pending(stack, task_id)
    alice, bob = await _links(stack, task_id, "alice"), await _links(stack, task_id, "bob")
    assert (await stack.http.post(_path(alice["approve"]), data={})).status_code == 200
    await until_status(stack, task_id, "failed")

    assert (await stack.http.post(f"/tasks/{task_id}/retry")).status_code == 202
    second = await _pending(stack, task_id, other_than=first["id"])
    assert second["run_number"] == 2
    # Bob never used his link; it was made for the first run's request, not this one.
    page = await stack.http.get(_path(bob["approve"]))
    assert page.status_code == 410 and "earlier approval request" in page.text and 'method="post"' not in page.text
    stale = await stack.http.post(_path(bob["approve"]), data={"comment": "from last week's email"})
    assert stale.status_code == 410 and "earlier approval request" in stale.text and "new link" in stale.text
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    assert len(receiver.requests) == 1

    # A link minted for the open request decides it.
    fresh = await _links(stack, task_id, "bob")
    assert (await stack.http.post(_path(fresh["approve"]), data={})).status_code == 200
    await until_status(stack, task_id, "completed")
    assert len(receiver.requests) == 2


@pytest_asyncio.fixture
async def agent_stack(dev_env: WorkflowEnvironment, engine: AsyncEngine, tmp_path: Path,
                      llm: FakeLlm) -> AsyncIterator[Stack]:  # noqa: F811 - llm is the fixture imported above
    async with running_stack(dev_env, engine, tmp_path, llm_base_url=llm.url, llm_model="fake-gpt-1",
                             llm_api_key_secret="llm_key", llm_timeout_seconds=10) as running:
        yield running


async def test_a_link_for_an_agents_tool_call_cannot_approve_its_next_one(
        agent_stack: Stack, llm: FakeLlm, receiver: Receiver):  # noqa: F811
    stack = agent_stack
    llm.call_tools(("http_request", {"method": "POST", "url": f"{receiver.url}/notes", "json": {"n": 1}}))
    llm.call_tools(("http_request", {"method": "DELETE", "url": f"{receiver.url}/invoices/INV-1"}))
    llm.answer("done")
    created = await stack.http.post("/tasks", json={
        "type": "agent", "tenant_id": stack.tenant, "title": "Note INV-1", "approval": {"approvers": ["alice", "bob"]},
        "payload": {"prompt": "Note that INV-1 is paid.", "allowed_tools": ["http_request"], "max_turns": 4}})
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]

    first = await _pending(stack, task_id)
    alice, bob = await _links(stack, task_id, "alice"), await _links(stack, task_id, "bob")
    assert (await stack.http.post(_path(alice["approve"]), data={"comment": "the POST is fine"})).status_code == 200

    # The agent's next risky call asks afresh; the links made for the first call decide nothing now.
    second = await _pending(stack, task_id, other_than=first["id"])
    assert (await get_task(stack, task_id))["draft"]["subject"].startswith("tool http_request DELETE")
    stale = await stack.http.post(_path(bob["approve"]), data={})
    assert stale.status_code == 410 and "earlier approval request" in stale.text
    spent = await stack.http.post(_path(alice["reject"]), data={"reason": "no"})
    assert spent.status_code == 409 and "already been used" in spent.text
    assert [r.method for r in receiver.requests] == ["POST"]
    assert (await _approval(stack, task_id))["id"] == second["id"]
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"

    refused = await stack.http.post(_path((await _links(stack, task_id, "bob"))["reject"]),
                                    data={"reason": "never delete invoices"})
    assert refused.status_code == 200, refused.text
    await until_status(stack, task_id, "completed")
    assert [r.method for r in receiver.requests] == ["POST"]


async def test_using_either_link_of_a_pair_spends_both(stack: Stack):
    task_id = await _awaiting(stack, approval={"approvers": ["alice", "bob"], "required": 2})
    alice = await _links(stack, task_id, "alice")
    approved = await stack.http.post(_path(alice["approve"]), data={})
    assert approved.status_code == 200 and "still waits for more approvals" in approved.text
    for url in (alice["reject"], alice["approve"]):
        page = await stack.http.get(_path(url))
        assert page.status_code == 409 and "already been used" in page.text and 'method="post"' not in page.text
    late = await stack.http.post(_path(alice["reject"]), data={"reason": "changed my mind"})
    assert late.status_code == 409 and "already been used" in late.text
    # Another pair for the same approver and request is spent too: one decision by link per approver.
    again = await _links(stack, task_id, "alice")
    assert (await stack.http.post(_path(again["reject"]), data={"reason": "really"})).status_code == 409
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    assert (await stack.http.post(_path((await _links(stack, task_id, "bob"))["approve"]), data={})).status_code == 200
    await until_status(stack, task_id, "completed")


def _legacy_token(key: bytes, **fields) -> str:
    """A token as links were minted before they named their approval request."""
    body = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    digest = hmac.new(key, body, hashlib.sha256).digest()
    encode = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=").decode()  # noqa: E731
    return f"{encode(body)}.{encode(digest)}"


async def test_a_link_minted_before_links_named_their_request_is_refused(stack: Stack):
    task_id = await _awaiting(stack, approval={"approvers": ["alice"]})
    key = approval_links.signing_key(stack.settings)
    for decision in ("approve", "reject"):
        token = _legacy_token(key, task_id=task_id, approver="alice", decision=decision,
                              expires_at=int(time.time()) + 600, nonce=f"old-{decision}")
        page = await stack.http.get(f"/approval-links/{token}")
        assert page.status_code == 410 and "no longer works" in page.text and "new link" in page.text
        used = await stack.http.post(f"/approval-links/{token}", data={"reason": "x"})
        assert used.status_code == 410 and "no longer works" in used.text
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"


def _form_fields(page: str, task_id: str) -> dict[str, str]:
    """The hidden fields of the inbox's decision form for a task, as a browser would send them."""
    form = page[page.index(f'action="/ui/tasks/{task_id}/decide"'):]
    form = form[:form.index("</form>")]
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form))


async def test_an_inbox_page_left_open_cannot_approve_the_agents_next_tool_call(
        agent_stack: Stack, llm: FakeLlm, receiver: Receiver):  # noqa: F811
    stack = agent_stack
    llm.call_tools(("http_request", {"method": "POST", "url": f"{receiver.url}/notes", "json": {"n": 1}}))
    llm.call_tools(("http_request", {"method": "DELETE", "url": f"{receiver.url}/invoices/INV-1"}))
    llm.answer("done")
    created = await stack.http.post("/tasks", json={
        "type": "agent", "tenant_id": stack.tenant, "title": "Note INV-1", "approval": {"approvers": ["alice", "bob"]},
        "payload": {"prompt": "Note that INV-1 is paid.", "allowed_tools": ["http_request"], "max_turns": 4}})
    task_id = created.json()["id"]
    first = await _pending(stack, task_id)
    page = await stack.http.get("http://testserver/ui", params={"as": "alice"})
    assert page.status_code == 200 and "tool http_request POST" in page.text
    shown = _form_fields(page.text, task_id)
    assert shown["approval_id"] == first["id"]

    # Bob approves the POST elsewhere; the agent asks about a DELETE. Alice's page still shows the POST.
    assert (await stack.http.post(f"/tasks/{task_id}/approve", json={}, headers={"X-Actor-Id": "bob"})
            ).status_code == 200
    second = await _pending(stack, task_id, other_than=first["id"])
    stale = await stack.http.post(f"http://testserver/ui/tasks/{task_id}/decide",
                                  data=shown | {"action": "approve"}, headers={"Origin": "http://testserver"})
    assert stale.status_code == 409 and "no longer open" in stale.text, stale.text
    assert (await _approval(stack, task_id))["id"] == second["id"]
    assert (await get_task(stack, task_id))["status"] == "awaiting_approval"
    assert [r.method for r in receiver.requests] == ["POST"]

    # The page as it is now decides the request it shows.
    fresh = _form_fields((await stack.http.get("http://testserver/ui", params={"as": "alice"})).text, task_id)
    assert fresh["approval_id"] == second["id"]
    rejected = await stack.http.post(f"http://testserver/ui/tasks/{task_id}/decide", headers={
        "Origin": "http://testserver"}, data=fresh | {"action": "reject", "reason": "never delete invoices"})
    assert rejected.status_code == 303, rejected.text
    await until_status(stack, task_id, "completed")
    assert [r.method for r in receiver.requests] == ["POST"]
