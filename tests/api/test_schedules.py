"""A definition's cron as a Temporal Schedule, through the HTTP API on the dev server: trigger now, pause
and resume, invalid cron, delete; on every configured database."""

import uuid
from zoneinfo import ZoneInfo

from temporalio.service import RPCError, RPCStatusCode

from followthrough.services.definitions import DefinitionRunner
from followthrough.services import schedules
from followthrough.domain.contracts import DefinitionRunResult
from tests.conftest import Stack
from tests.helpers import eventually, until_status

# Once a year at a moment no test run will reach: every run in these tests is triggered by hand.
YEARLY = "0 3 1 1 *"


def digest(stack: Stack, **overrides) -> dict:
    return {
        "tenant_id": stack.tenant, "name": f"digest-{uuid.uuid4().hex[:6]}", "type": "email", "mode": "autonomous",
        "title": "Weekly digest for {{ team }}", "cron": YEARLY, "timezone": "Europe/Paris",
        "payload": {"to": ["{{ team }}@example.com"], "subject": "Digest", "body": "Hello {{ team }}"},
        "variables": {"team": "sales"},
    } | overrides


async def create(stack: Stack, **overrides) -> dict:
    response = await stack.http.post("/definitions", json=digest(stack, **overrides))
    assert response.status_code == 201, response.text
    return response.json()


async def test_trigger_now_creates_a_task_marked_schedule_that_completes(stack: Stack):
    definition = await create(stack)
    schedule = definition["schedule"]
    assert (schedule["id"], schedule["state"], schedule["cron"], schedule["timezone"]) == (
        f"definition-{definition['id']}", "active", YEARLY, "Europe/Paris")
    detail = (await stack.http.get(f"/definitions/{definition['id']}")).json()
    assert detail["schedule"]["next_run_times"] and detail["schedule"]["paused"] is False

    triggered = await stack.http.post(f"/definitions/{definition['id']}/schedule/trigger")
    assert triggered.status_code == 202, triggered.text
    runs = await eventually(lambda: _runs(stack, definition["id"]), lambda r: r["total"] == 1, timeout=20)
    [run] = runs["items"]
    assert run["trigger"] == "schedule" and run["definition_id"] == definition["id"]
    assert run["schedule_run_id"].startswith(f"definition-run-{definition['id']}-")
    assert run["title"] == "Weekly digest for sales" and run["created_by"] == f"schedule:{definition['name']}"
    task = await until_status(stack, run["id"], "completed")
    assert task["payload"]["to"] == ["sales@example.com"]

    # The firing's own run records the task it created, and Temporal lists it among the recent runs.
    result = await stack.client.get_workflow_handle(run["schedule_run_id"],
                                                    result_type=DefinitionRunResult).result()
    assert (result.outcome, result.task_id) == ("created", run["id"])
    recent = (await stack.http.get(f"/definitions/{definition['id']}/schedule")).json()["recent_runs"]
    assert [r["workflow_id"] for r in recent] == [run["schedule_run_id"]]
    assert (await stack.http.delete(f"/definitions/{definition['id']}")).status_code == 204


async def test_pause_and_resume_show_in_the_schedules_description(stack: Stack):
    definition = await create(stack)
    paused = await stack.http.post(f"/definitions/{definition['id']}/schedule/pause",
                                   json={"note": "quarter close"})
    assert paused.status_code == 200, paused.text
    assert (paused.json()["paused"], paused.json()["state"], paused.json()["note"]) == (True, "paused",
                                                                                       "quarter close")
    description = await schedules.describe(stack.client, definition["id"])
    assert description.schedule.state.paused and description.schedule.state.note == "quarter close"
    listed = (await stack.http.get("/definitions", params={"tenant_id": stack.tenant})).json()["items"]
    assert listed[0]["schedule"]["state"] == "paused"

    resumed = await stack.http.post(f"/definitions/{definition['id']}/schedule/resume",
                                    headers={"X-Actor-Id": "ops"})
    assert resumed.status_code == 200 and resumed.json()["paused"] is False
    description = await schedules.describe(stack.client, definition["id"])
    assert not description.schedule.state.paused and description.schedule.state.note == "resumed by ops"
    assert (await stack.http.delete(f"/definitions/{definition['id']}")).status_code == 204


async def test_invalid_cron_and_time_zone_are_a_422_and_nothing_is_created(stack: Stack):
    for cron, reason in [("61 * * * *", "minute"), ("every day", "5 fields"), ("* * * * * * *", "5 fields")]:
        response = await stack.http.post("/definitions", json=digest(stack, cron=cron))
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "cron"] and reason in error["msg"]
    zone = await stack.http.post("/definitions", json=digest(stack, timezone="Mars/Olympus"))
    assert zone.status_code == 422 and zone.json()["detail"][0]["loc"] == ["body", "timezone"]
    # A scheduled run has no one to give it variables: each one used needs a default.
    missing = await stack.http.post("/definitions", json=digest(stack, variables={}))
    assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "variables", "team"]
    # ... and what it renders to must be a valid task of its type.
    invalid = await stack.http.post("/definitions", json=digest(stack, variables={"team": "no spaces allowed"}))
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"][:3] == ["body", "payload", "to"]
    assert (await stack.http.get("/definitions", params={"tenant_id": stack.tenant})).json()["total"] == 0

    definition = await create(stack, cron=None)
    assert definition["schedule"] is None
    refused = await stack.http.patch(f"/definitions/{definition['id']}", json={"cron": "0 25 * * *"})
    assert refused.status_code == 422
    no_schedule = await stack.http.post(f"/definitions/{definition['id']}/schedule/trigger")
    assert no_schedule.status_code == 409


async def test_cron_changes_follow_the_definition_and_delete_removes_the_schedule(stack: Stack):
    definition = await create(stack, cron=None)
    added = await stack.http.patch(f"/definitions/{definition['id']}", json={"cron": "0 9 * * MON-FRI"})
    assert added.status_code == 200 and added.json()["schedule"]["state"] == "active"
    described = await schedules.describe(stack.client, definition["id"])
    assert described.schedule.spec.time_zone_name == "Europe/Paris"
    paris = [t.astimezone(ZoneInfo("Europe/Paris")) for t in described.info.next_action_times]
    assert paris and all((t.hour, t.minute) == (9, 0) and t.weekday() < 5 for t in paris)

    await stack.http.post(f"/definitions/{definition['id']}/schedule/pause")
    changed = await stack.http.patch(f"/definitions/{definition['id']}", json={"cron": "@daily", "timezone": "UTC"})
    assert changed.status_code == 200, changed.text
    described = await schedules.describe(stack.client, definition["id"])
    assert described.schedule.spec.time_zone_name == "UTC" and described.schedule.state.paused  # still paused
    assert changed.json()["schedule"]["state"] == "paused"

    removed = await stack.http.delete(f"/definitions/{definition['id']}/schedule")
    assert removed.status_code == 204
    await _gone(stack, definition["id"])
    after = (await stack.http.get(f"/definitions/{definition['id']}")).json()
    assert (after["cron"], after["schedule"]) == (None, None)
    assert (await stack.http.delete(f"/definitions/{definition['id']}/schedule")).status_code == 409

    # Deleting a scheduled definition deletes its schedule too.
    scheduled = await create(stack)
    assert (await stack.http.delete(f"/definitions/{scheduled['id']}")).status_code == 204
    await _gone(stack, scheduled["id"])
    assert (await stack.http.post(f"/definitions/{scheduled['id']}/schedule/pause")).status_code == 404


async def _runs(stack: Stack, definition_id: str) -> dict:
    return (await stack.http.get(f"/definitions/{definition_id}/runs")).json()


async def _gone(stack: Stack, definition_id: str) -> None:
    try:
        await schedules.describe(stack.client, definition_id)
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
    else:
        raise AssertionError("the schedule still exists")


async def test_a_repeated_firing_makes_one_task_and_a_deleted_definition_none(stack: Stack):
    """What a retried activity does: the same firing again finds the task the first attempt created,
    even once that task has finished."""
    definition = await create(stack)
    runner = DefinitionRunner(stack.settings, stack.client, stack.engine)
    firing = f"definition-run-{definition['id']}-2030-01-01T02:00:00Z"
    first = await runner.run_scheduled(definition["id"], firing)
    again = await runner.run_scheduled(definition["id"], firing)
    assert first.outcome == again.outcome == "created" and first.task_id == again.task_id
    await until_status(stack, first.task_id, "completed")
    late = await runner.run_scheduled(definition["id"], firing)
    assert late.task_id == first.task_id
    runs = await _runs(stack, definition["id"])
    assert [(r["id"], r["trigger"], r["schedule_run_id"]) for r in runs["items"]] == [
        (first.task_id, "schedule", firing)]
    assert (await stack.http.get(f"/tasks/{first.task_id}")).json()["run_number"] == 1

    assert (await stack.http.delete(f"/definitions/{definition['id']}")).status_code == 204
    skipped = await runner.run_scheduled(definition["id"], f"definition-run-{definition['id']}-2031-01-01T02:00:00Z")
    assert (skipped.outcome, skipped.task_id) == ("skipped", None)
