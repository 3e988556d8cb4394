"""Blocked work: a drafter that finds the task needs a person (here the LLM answers "blocked")
puts it in the people's hands like a manual task — awaiting_approval with the reason, listed in
the inbox with Mark done — and it completes when someone marks it done with a result."""

from tests.api.test_llm_drafting import create, events, lstack, llm  # noqa: F401 - fixtures
from tests.helpers import eventually, until_status

REASON = "Requires access to the procurement portal to order the chairs"


async def test_blocked_work_waits_for_a_person_and_completes_when_marked_done(lstack, llm):  # noqa: F811
    llm.reply({"blocked": REASON})
    task_id = await create(lstack, mode="autonomous", title="Order new office chairs")

    task = await until_status(lstack, task_id, "awaiting_approval")
    assert task["stage"] == "awaiting_person"
    [drafted] = [e for e in await events(lstack, task_id) if e["type"] == "TASK_DRAFTED"]
    assert drafted["data"]["blocked"] == REASON and drafted["data"]["model"] == llm.model
    approval = await eventually(lambda: lstack.http.get(f"/tasks/{task_id}/approval"),
                                lambda r: r.status_code == 200)
    assert approval.json()["reason"] == f"blocked: {REASON}"[:200]

    inbox = await lstack.http.get(f"http://testserver/ui?as=dana&tenant_id={lstack.tenant}")
    assert "Order new office chairs" in inbox.text and "Mark done" in inbox.text and REASON in inbox.text
    done = await lstack.http.post(f"/tasks/{task_id}/complete", json={
        "actor_id": "dana", "comment": "ordered by phone", "result": {"order": "PO-7781"}})
    assert done.status_code == 200, done.text
    finished = await until_status(lstack, task_id, "completed")
    assert finished["result"] == {"done_by": "dana", "comment": "ordered by phone", "result": {"order": "PO-7781"}}
    assert not [e for e in await events(lstack, task_id) if e["type"] == "TASK_EXECUTION_STARTED"]


async def test_a_deadline_never_approves_blocked_work(lstack, llm):  # noqa: F811
    # Autonomous, approve at the deadline, a 2 s deadline: the block still holds the task for a person, and
    # the deadline expires it rather than sending anything.
    llm.reply({"blocked": REASON})
    task_id = await create(lstack, mode="autonomous", approval_timeout_seconds=2, sla={"on_deadline": "approve"})
    task = await eventually(lambda: lstack.http.get(f"/tasks/{task_id}"),
                            lambda r: r.json()["status"] not in ("pending", "in_progress", "awaiting_approval"),
                            timeout=30)
    assert task.json()["status"] == "expired", task.text
    types = [e["type"] for e in await events(lstack, task_id)]
    assert "TASK_APPROVED" not in types and "TASK_EXECUTION_STARTED" not in types
