"""The report type end to end: the HTTP API, the dev server, the worker and the mirror."""

from datetime import datetime, timedelta, timezone

from tests.conftest import Stack
from tests.helpers import add_task_secret, eventually, outbox_rows, task_body, until_status


async def create(stack: Stack, body: dict) -> str:
    response = await stack.http.post("/tasks", json=body | {"tenant_id": stack.tenant})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def report_body(task: dict | None = None, **payload) -> dict:
    """A report task's body: ``payload`` fields over a two-hour window around now, ``task`` fields on top."""
    now = datetime.now(timezone.utc)
    window = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    return {"type": "report", "title": "Daily figures", "payload": {"kind": "task_summary"} | window | payload} | (task or {})


async def test_report_counts_the_tenants_tasks(stack: Stack):
    done = [await create(stack, task_body(mode="suggest")) for _ in range(3)]
    rejected = await create(stack, task_body(mode="review"))
    for task_id in done:
        await until_status(stack, task_id, "completed")
    await until_status(stack, rejected, "awaiting_approval")
    assert (await stack.http.post(f"/tasks/{rejected}/reject", json={"reason": "paid"})).status_code == 200
    await until_status(stack, rejected, "rejected")

    summary_id = await create(stack, report_body({"mode": "autonomous"}))
    task = await until_status(stack, summary_id, "completed")
    report = task["draft"]["data"]["report"]
    assert task["draft"]["channel"] == "none" and task["mode"] == "autonomous"
    # The running report leaves itself out.
    assert report["total"] == 4 and report["tenant_id"] == stack.tenant
    assert report["by_type"] == {"invoice_follow_up": 4}
    assert (report["by_status"]["completed"], report["by_status"]["rejected"]) == (3, 1)
    assert task["result"]["delivery"]["detail"] == {"delivered": False, "report": report}
    assert task["draft"]["body"].startswith("# Task summary ")

    stats_id = await create(stack, report_body(kind="execution_stats", format="html"))
    task = await until_status(stack, stats_id, "completed")
    stats = task["result"]["delivery"]["detail"]["report"]
    # The first report is finished now, so it counts here.
    assert (stats["finished"], stats["completed"], stats["success_rate"]) == (5, 4, 0.8)
    assert stats["by_type"] == {
        "invoice_follow_up": {"finished": 4, "completed": 3, "success_rate": 0.75},
        "report": {"finished": 1, "completed": 1, "success_rate": 1.0}}
    assert stats["duration_seconds"]["count"] == 5 and stats["duration_seconds"]["max"] >= 0
    assert task["draft"]["body"].startswith("<!DOCTYPE html>") and "<td>report</td>" in task["draft"]["body"]


async def test_invalid_report_payloads_are_422_naming_the_field(stack: Stack):
    now = datetime.now(timezone.utc)
    cases = [
        (report_body(kind="weekly"), ["body", "payload", "kind"]),
        (report_body(end=(now - timedelta(days=1)).isoformat()), ["body", "payload", "end"]),
        (report_body(start="2025-01-01T00:00:00Z", end="2026-06-01T00:00:00Z"), ["body", "payload", "end"]),
        (report_body(format="pdf"), ["body", "payload", "format"]),
        (report_body(surprise=True), ["body", "payload", "surprise"]),
        (report_body(deliver={"webhook": {"url": "https://x.example", "secret": "bad name"}}),
         ["body", "payload", "deliver", "webhook", "secret"]),
    ]
    for body, loc in cases:
        response = await stack.http.post("/tasks", json=body | {"tenant_id": stack.tenant})
        assert response.status_code == 422, (body, response.text)
        assert response.json()["detail"][0]["loc"] == loc, response.json()


async def test_emailed_report_lands_in_the_outbox(stack: Stack):
    assert not stack.settings.smtp_host
    task_id = await create(stack, report_body(deliver={"email": {"to": ["ops@acme.example"]}}))
    task = await until_status(stack, task_id, "completed")
    assert task["mode"] == "autonomous"  # the type's default
    [message] = await outbox_rows(stack.engine, task_id)
    assert message.recipients == ["ops@acme.example"] and message.status == "queued"
    assert message.subject.startswith("Task summary ") and message.body.startswith("# Task summary ")
    assert task["draft"]["data"]["report"]["total"] == 0


async def test_report_is_listed_among_task_types(stack: Stack):
    types = {t["name"]: t for t in (await stack.http.get("/task-types")).json()["items"]}
    assert types["report"]["default_mode"] == "autonomous"
    assert types["report"]["payload_schema"]["required"] == ["kind", "start", "end"]


async def test_report_delivered_to_a_webhook_arrives_signed(stack: Stack):
    import asyncio

    from followthrough.infra import signing
    from tests.receivers import Receiver

    add_task_secret(stack.settings, stack.tenant, "report_hook", "report-secret")
    with Receiver() as receiver:
        await until_status(stack, await create(stack, task_body(mode="suggest")), "completed")
        report_id = await create(stack, report_body(
            deliver={"webhook": {"url": f"{receiver.url}/reports", "secret": "report_hook"}}, format="json"))
        task = await until_status(stack, report_id, "completed")
        await eventually(lambda: asyncio.sleep(0, len(receiver.requests)), lambda n: n == 1)
    [request] = receiver.requests
    assert request.path == "/reports"
    assert signing.verify("report-secret", request.headers[signing.HEADER.lower()], request.body)
    event = request.json()
    assert event["event"] == "report.ready"
    assert event["data"]["report"]["total"] == 1 and event["data"]["format"] == "json"
    assert task["result"]["delivery"]["channel"] == "webhook"
