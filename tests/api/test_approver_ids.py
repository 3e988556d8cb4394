"""Approver ids hold no separator of the approvers key: refused where they enter, and a stored one cannot
put a task in another person's queue."""

import html
import uuid

import pytest
from sqlalchemy import update

from followthrough.db import api_keys
from followthrough.db.approval_records import approvers_key
from followthrough.db.tables import Approval
from tests.conftest import Stack
from tests.helpers import eventually, task_body, until_status


async def test_an_approver_id_with_the_separator_is_a_422_naming_it(stack: Stack):
    for approval in ({"approval": {"approvers": ["bob|alice"]}},
                     {"sla": {"escalate_after_seconds": 60, "escalate_to": ["bob|alice"]}},
                     {"approval": {"approvers": ["role:finance"]}},
                     {"approval": {"approvers": ["bob\nalice"]}}):
        response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, **approval))
        assert response.status_code == 422, (approval, response.text)
        assert "'|'" in response.text or "role:" in response.text or "U+000A" in response.text, response.text
    queue = await stack.http.get("/approvals", params={"approver": "bob|alice"})
    assert queue.status_code == 422 and "'|'" in queue.text
    inbox = await stack.http.get("http://testserver/ui", params={"as": "bob|alice"})
    assert inbox.status_code == 422 and "may not contain the character '|'" in html.unescape(inbox.text)
    task = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant))
    links = await stack.http.post(f"/tasks/{task.json()['id']}/approval-links", json={"approver": "x|alice"})
    assert links.status_code == 422 and "'|'" in links.text


async def test_a_stored_crafted_id_does_not_reach_another_persons_queue(stack: Stack):
    """A request stored before ids were checked (its key as the mirror writer makes it for "bob|alice")."""
    title = f"Crafted {uuid.uuid4().hex[:8]}"
    created = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, title=title,
                                                             approval={"approvers": ["bob"]}))
    task_id = created.json()["id"]
    await until_status(stack, task_id, "awaiting_approval")
    await eventually(lambda: stack.http.get(f"/tasks/{task_id}/approval"), lambda r: r.status_code == 200)
    async with stack.engine.begin() as conn:
        await conn.execute(update(Approval).where(Approval.task_id == task_id)
                           .values(approvers=["bob|alice"], approvers_key=approvers_key(["bob|alice"])))

    for who in ("alice", "bob", "%", "_"):
        queue = (await stack.http.get("/approvals", params={"approver": who, "tenant_id": stack.tenant})).json()
        assert task_id not in [a["task_id"] for a in queue["items"]], who
        inbox = await stack.http.get("http://testserver/ui", params={"as": who, "tenant_id": stack.tenant})
        assert inbox.status_code == 200 and title not in inbox.text, who
    # The same page does list a task naming alice: the queue itself works.
    mine = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, title=f"{title} for alice",
                                                          approval={"approvers": ["alice"]}))
    await until_status(stack, mine.json()["id"], "awaiting_approval")
    inbox = await eventually(
        lambda: stack.http.get("http://testserver/ui", params={"as": "alice", "tenant_id": stack.tenant}),
        lambda r: f"{title} for alice" in r.text)
    assert f"{title}<" not in inbox.text


async def test_a_key_cannot_act_as_a_crafted_user(stack: Stack):
    with pytest.raises(api_keys.KeyError_, match="'\\|'"):
        await api_keys.create(stack.engine, tenant_id=stack.tenant, actor_id="bob|alice", name="", roles=["approver"])
