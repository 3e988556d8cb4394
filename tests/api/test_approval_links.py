"""Signed approval links: GET shows a page and changes nothing, POST decides once."""

import asyncio
import time
from urllib.parse import urlsplit

import pytest

from followthrough import approval_links
from tests.conftest import Stack
from tests.helpers import eventually, get_task, task_body, until_status


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
    # The reject link of the same pair is unused, but there is nothing left to decide.
    late = await stack.http.post(_path(links["reject"]), data={"reason": "too late"})
    assert late.status_code == 409 and "already approved" in late.text


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
    expired = approval_links.mint(key, task_id, "alice", "approve", int(time.time()) - 1)
    assert (await stack.http.get(f"/approval-links/{expired}")).status_code == 410
    response = await stack.http.post(f"/approval-links/{expired}", data={})
    assert response.status_code == 410 and "expired" in response.text
    # Signed with another key: refused as tampered.
    forged = approval_links.mint(b"another key", task_id, "alice", "approve", int(time.time()) + 60)
    assert (await stack.http.post(f"/approval-links/{forged}", data={})).status_code == 401

    outsider = await stack.http.post(f"/tasks/{task_id}/approval-links", json={"approver": "mallory"})
    assert outsider.status_code == 403 and "mallory" in outsider.json()["detail"]
    # A link minted past the API for someone not allowed: the workflow's 403 comes through as a page.
    sneaky = approval_links.mint(key, task_id, "mallory", "approve", int(time.time()) + 60)
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
    from followthrough.settings import Settings

    settings = Settings(data_dir=tmp_path)
    key = approval_links.signing_key(settings)
    assert approval_links.signing_key(settings) == key and len(key) == 32
    assert (tmp_path / "approval-link.key").stat().st_mode & 0o777 == 0o600
    token = approval_links.mint(key, "t1", "alice", "reject", 2_000_000_000)
    link = approval_links.check(key, token, now=1_999_999_999)
    assert (link.task_id, link.approver, link.decision) == ("t1", "alice", "reject")
    with pytest.raises(approval_links.ExpiredToken):
        approval_links.check(key, token, now=2_000_000_000)
    with pytest.raises(approval_links.InvalidToken):
        approval_links.check(b"other", token, now=0)
    with pytest.raises(approval_links.InvalidToken):
        approval_links.check(key, token + "x", now=0)


def test_a_named_secret_signs_the_links(tmp_path, monkeypatch):
    from followthrough.settings import Settings

    monkeypatch.setenv("FOLLOWTHROUGH_SECRET_LINK_KEY", "s3cret")
    settings = Settings(data_dir=tmp_path, approval_link_secret="link_key")
    assert approval_links.signing_key(settings) == b"s3cret"
    assert not (tmp_path / "approval-link.key").exists()
