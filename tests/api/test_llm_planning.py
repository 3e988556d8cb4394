"""A project planned by an LLM: the API, the dev server and worker, and the OpenAI-compatible
server of tests/llm_server.py. The plan's subtasks run as child tasks; a plan naming a type the
project does not allow fails the project with the reason; without an LLM a project is refused."""

from tests.api.test_llm_drafting import create, events, lstack, llm  # noqa: F401 - fixtures
from tests.helpers import eventually, outbox_rows, until_status

GOAL = {"goal": "Tell both pilot customers that the Q4 pricing changes on 1 December",
        "allowed_types": ["email"], "execution": "sequential"}


def _email(to: str) -> dict:
    return {"type": "email", "title": f"Pricing note to {to}", "mode": "suggest",
            "payload": {"to": [to], "subject": "Q4 pricing", "body": "Dear customer, pricing changes on 1 Dec."}}


async def test_a_project_runs_the_subtasks_its_llm_planned(lstack, llm):  # noqa: F811
    llm.reply({"subtasks": [_email("ana@pilot-one.example"), _email("bo@pilot-two.example")]},
              prompt_tokens=900, completion_tokens=120)
    llm.draft(subject="Q4 pricing for Pilot One", body="Dear Ana, ...", confidence=0.95)
    llm.draft(subject="Q4 pricing for Pilot Two", body="Dear Bo, ...", confidence=0.95)
    parent = await create(lstack, type="project", title="Q4 pricing notes", mode="autonomous", payload=GOAL)

    done = await until_status(lstack, parent, "completed", timeout=40)
    assert done["progress"] == {"done": 2, "failed": 0, "total": 2}
    children = (await lstack.http.get(f"/tasks/{parent}/subtasks")).json()["items"]
    assert [(c["title"], c["status"], c["draft"]["subject"]) for c in children] == [
        ("Pricing note to ana@pilot-one.example", "completed", "Q4 pricing for Pilot One"),
        ("Pricing note to bo@pilot-two.example", "completed", "Q4 pricing for Pilot Two")]
    [planned] = [e for e in await events(lstack, parent) if e["type"] == "TASK_SUBTASKS_PLANNED"]
    assert planned["data"]["planned_by"]["model"] == llm.model
    assert (planned["data"]["planned_by"]["prompt_tokens"], planned["data"]["planned_by"]["completion_tokens"]) == (
        900, 120)
    prompt = llm.prompt(0)
    assert "Q4 pricing changes on 1 December" in prompt and "email" in prompt


async def test_a_plan_outside_the_allowed_types_fails_the_project(lstack, llm):  # noqa: F811
    llm.reply({"subtasks": [{"type": "webhook", "title": "Tell the CRM", "payload": {}}]})
    parent = await create(lstack, type="project", title="Q4 pricing notes", payload=GOAL)
    failed = await until_status(lstack, parent, "failed", timeout=30)
    assert "webhook" in failed["error"] and "not one of email" in failed["error"]
    assert len(llm.requests) == 1  # an invalid plan is not asked for again
    assert (await lstack.http.get(f"/tasks/{parent}/subtasks")).json()["total"] == 0


async def test_a_project_needs_an_llm(stack):
    refused = await stack.http.post("/tasks", json={"type": "project", "title": "Q4", "payload": GOAL})
    assert refused.status_code == 422 and "FOLLOWTHROUGH_LLM_BASE_URL" in str(refused.json()["detail"])


async def test_a_planned_subtask_runs_no_looser_than_its_project(lstack, llm):  # noqa: F811
    """The model picks each subtask's mode; it never gets a looser one than the project's, and the subtasks take
    the project's approvers."""
    llm.reply({"subtasks": [_email("ana@pilot-one.example") | {"mode": "autonomous"},
                            _email("bo@pilot-two.example") | {"mode": "assisted"}]})
    llm.draft(subject="Q4 pricing for Pilot One", body="Dear Ana, ...", confidence=0.99)
    llm.draft(subject="Q4 pricing for Pilot Two", body="Dear Bo, ...", confidence=0.99)
    parent = await create(lstack, type="project", title="Q4 pricing notes", mode="review",
                          approval={"approvers": ["alice"]}, payload=GOAL | {"execution": "parallel"})
    children = await eventually(
        lambda: lstack.http.get(f"/tasks/{parent}/subtasks"),
        lambda r: r.json()["total"] == 2 and all(c["status"] == "awaiting_approval" for c in r.json()["items"]),
        timeout=30)
    items = children.json()["items"]
    assert [c["mode"] for c in items] == ["review", "review"]
    for child in items:
        approval = (await lstack.http.get(f"/tasks/{child['id']}/approval")).json()
        assert approval["approvers"] == ["alice"]
    assert await outbox_rows(lstack.engine, items[0]["id"]) == []
