"""Report figures, rendering and drafting against the mirror, on every configured database."""

import json
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.activities.transports.none import TRANSPORT as NONE_TRANSPORT
from followthrough.domain.contracts import Draft
from followthrough.db.reports import TASKS, execution_stats, percentile, task_summary
from followthrough.config.settings import Settings
from followthrough.tasktypes import get_type
from followthrough.tasktypes.base import DraftContext
from followthrough.tasktypes.report import ReportPayload, render_report
from tests.helpers import task_input

START = datetime(2026, 11, 1, tzinfo=timezone.utc)
END = datetime(2026, 11, 21, tzinfo=timezone.utc)


def row(tenant: str, type_: str, status: str, *, created: datetime, duration: float | None = None,
        attempts: int = 1, task_id: str | None = None, started: bool = True) -> dict[str, Any]:
    """A task row; ``duration`` seconds between started_at and finished_at when given."""
    task_id = task_id or str(uuid.uuid4())
    started_at = created + timedelta(seconds=1) if started else None
    finished_at = started_at + timedelta(seconds=duration) if started_at and duration is not None else None
    return dict(id=task_id, tenant_id=tenant, type=type_, title=f"{type_} task", mode="review", priority="normal",
                priority_rank=1, status=status, stage="done", payload={}, attempts=attempts,
                workflow_id=f"task-{task_id}", approval_timeout_seconds=3600, created_at=created,
                updated_at=created, started_at=started_at, finished_at=finished_at)


async def seed(engine: AsyncEngine, report_id: str) -> str:
    tenant = f"r-{uuid.uuid4().hex[:10]}"
    day = START + timedelta(days=3)
    rows = [
        # In range: 4 completed, 1 failed, 1 rejected finished; 2 still open.
        row(tenant, "invoice_follow_up", "completed", created=START, duration=10, attempts=1),  # start is inclusive
        row(tenant, "invoice_follow_up", "completed", created=day, duration=20, attempts=1),
        row(tenant, "invoice_follow_up", "completed", created=day, duration=60, attempts=3),
        row(tenant, "invoice_follow_up", "failed", created=day, duration=30, attempts=8),
        row(tenant, "http_call", "rejected", created=day, duration=5, attempts=0),
        row(tenant, "http_call", "completed", created=day, duration=2.5, attempts=1),
        row(tenant, "invoice_follow_up", "awaiting_approval", created=day, attempts=0),
        row(tenant, "invoice_follow_up", "pending", created=day, attempts=0, started=False),
        # Out of range (end is exclusive), another tenant, and the report task itself.
        row(tenant, "invoice_follow_up", "completed", created=START - timedelta(microseconds=1), duration=1),
        row(tenant, "invoice_follow_up", "failed", created=END, duration=1),
        row("someone-else", "invoice_follow_up", "failed", created=day, duration=1),
        row(tenant, "report", "in_progress", created=day, task_id=report_id),
    ]
    async with engine.begin() as conn:
        await conn.execute(TASKS.insert(), rows)
    return tenant


@pytest.fixture
def report_id() -> str:
    return str(uuid.uuid4())


async def test_task_summary_counts(engine: AsyncEngine, report_id: str):
    tenant = await seed(engine, report_id)
    report = await task_summary(engine, tenant, START, END, exclude_task_id=report_id)
    assert report == {
        "kind": "task_summary", "tenant_id": tenant,
        "start": "2026-11-01T00:00:00+00:00", "end": "2026-11-21T00:00:00+00:00",
        "total": 8,
        "by_status": {"pending": 1, "scheduled": 0, "in_progress": 0, "awaiting_approval": 1, "paused": 0,
                      "completed": 4, "failed": 1, "cancelled": 0, "rejected": 1, "expired": 0},
        "by_type": {"http_call": 2, "invoice_follow_up": 6},
        "by_type_status": {"http_call": {"completed": 1, "rejected": 1},
                           "invoice_follow_up": {"pending": 1, "awaiting_approval": 1, "completed": 3,
                                                 "failed": 1}},
    }
    # Without the exclusion the running report counts itself.
    assert (await task_summary(engine, tenant, START, END))["by_type"]["report"] == 1


async def test_execution_stats_figures(engine: AsyncEngine, report_id: str):
    tenant = await seed(engine, report_id)
    report = await execution_stats(engine, tenant, START, END, exclude_task_id=report_id)
    assert report == {
        "kind": "execution_stats", "tenant_id": tenant,
        "start": "2026-11-01T00:00:00+00:00", "end": "2026-11-21T00:00:00+00:00",
        "finished": 6,
        "by_status": {"completed": 4, "failed": 1, "cancelled": 0, "rejected": 1, "expired": 0},
        "completed": 4,
        "success_rate": 0.6667,
        # Durations 2.5, 5, 10, 20, 30, 60: p50 between 10 and 20, p95 three quarters from 30 to 60.
        "duration_seconds": {"count": 6, "mean": 21.25, "p50": 15.0, "p95": 52.5, "max": 60.0},
        "attempts": {"mean": 2.333, "max": 8},
        "by_type": {"http_call": {"finished": 2, "completed": 1, "success_rate": 0.5},
                    "invoice_follow_up": {"finished": 4, "completed": 3, "success_rate": 0.75}},
    }


async def test_empty_range(engine: AsyncEngine):
    tenant = f"r-{uuid.uuid4().hex[:10]}"
    summary = await task_summary(engine, tenant, START, END)
    assert summary["total"] == 0 and summary["by_type"] == {} and set(summary["by_status"].values()) == {0}
    stats = await execution_stats(engine, tenant, START, END)
    assert stats["finished"] == 0 and stats["success_rate"] is None
    assert stats["duration_seconds"] == {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    assert stats["attempts"] == {"mean": None, "max": None}
    for fmt in ("markdown", "html", "json"):
        assert render_report(stats, fmt) and render_report(summary, fmt)


def test_percentile_interpolates_between_ranks():
    assert percentile([], 0.5) is None
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile([0.0, 10.0], 0.95) == pytest.approx(9.5)


async def test_renderings(engine: AsyncEngine, report_id: str):
    tenant = await seed(engine, report_id)
    summary = await task_summary(engine, tenant, START, END, exclude_task_id=report_id)
    stats = await execution_stats(engine, tenant, START, END, exclude_task_id=report_id)

    assert json.loads(render_report(summary, "json")) == summary

    markdown = render_report(summary, "markdown")
    assert markdown.startswith("# Task summary 2026-11-01 – 2026-11-21")
    assert "**Total: 8**" in markdown and "| completed | 4 |" in markdown
    assert "| invoice_follow_up | 6 | pending 1, awaiting_approval 1, completed 3, failed 1 |" in markdown
    assert "| scheduled |" not in markdown  # zero rows are left out

    markdown = render_report(stats, "markdown")
    assert markdown.startswith("# Execution stats 2026-11-01 – 2026-11-21")
    assert "success rate 66.7 %" in markdown and "| p95 | 52.500 |" in markdown
    assert "| http_call | 2 | 1 | 50.0 % |" in markdown and "mean 2.333, max 8" in markdown

    html = render_report(stats, "html")
    assert html.startswith("<!DOCTYPE html>") and "<h1>Execution stats 2026-11-01 – 2026-11-21</h1>" in html
    assert '<tr><td>invoice_follow_up</td><td class="n">4</td><td class="n">3</td><td class="n">75.0 %</td></tr>' \
        in html
    assert "http://" not in html and "https://" not in html  # no external assets


async def test_html_escapes_type_names_and_titles(engine: AsyncEngine):
    tenant = f"r-{uuid.uuid4().hex[:10]}"
    evil = "<script>alert(1)</script>"
    async with engine.begin() as conn:
        await conn.execute(TASKS.insert(), [row(tenant, evil, "completed", created=START, duration=1),
                                            row(tenant, "a|b", "failed", created=START, duration=1)])
    for report in (await task_summary(engine, tenant, START, END), await execution_stats(engine, tenant, START, END)):
        html = render_report(report, "html", title=f"Q4 {evil}")
        assert "<script>" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        assert "<title>Q4 &lt;script&gt;" in html
        markdown = render_report(report, "markdown")
        assert "| a\\|b |" in markdown and "\\<script>" in markdown


def test_payload_validation():
    ok = ReportPayload.model_validate({"kind": "task_summary", "start": "2026-11-01", "end": "2026-11-21T00:00:00"})
    assert ok.format == "markdown" and ok.deliver is None and ok.start.tzinfo is not None
    bad = [
        ({"kind": "weekly"}, ("kind",)),
        ({"end": "2026-10-01T00:00:00Z"}, ("end",)),
        ({"end": "2026-11-01T00:00:00Z"}, ("end",)),
        ({"end": "2027-11-03T00:00:00Z"}, ("end",)),
        ({"format": "pdf"}, ("format",)),
        ({"surprise": 1}, ("surprise",)),
        ({"deliver": {"email": {"to": []}}}, ("deliver", "email", "to")),
        ({"deliver": {"email": {"to": ["not-an-address"]}}}, ("deliver", "email", "to", 0)),
        ({"deliver": {"webhook": {"url": "ftp://x", "secret": "s"}}}, ("deliver", "webhook", "url")),
        ({"deliver": {"webhook": {"url": "https://x.example", "secret": "no spaces"}}},
         ("deliver", "webhook", "secret")),
        ({"deliver": {}}, ("deliver",)),
        ({"deliver": {"sms": {}}}, ("deliver", "sms")),
    ]
    base = {"kind": "execution_stats", "start": "2026-11-01T00:00:00Z", "end": "2026-11-21T00:00:00Z"}
    for change, loc in bad:
        with pytest.raises(ValidationError) as caught:
            ReportPayload.model_validate(base | change)
        assert caught.value.errors()[0]["loc"] == loc, (change, caught.value.errors())


async def draft_for(engine: AsyncEngine, tenant: str, report_id: str, **payload: Any) -> Draft:
    report_type = get_type("report")
    body = {"kind": "task_summary", "start": START.isoformat(), "end": END.isoformat()} | payload
    task = task_input(task_id=report_id, type="report", mode="autonomous", tenant_id=tenant, payload=body)
    return await report_type.draft(report_type.payload_model.model_validate(body),
                                   DraftContext(Settings(), task, engine))


async def test_draft_channels(engine: AsyncEngine, report_id: str):
    tenant = await seed(engine, report_id)

    kept = await draft_for(engine, tenant, report_id)
    assert (kept.channel, kept.to, kept.subject) == ("none", [], "Task summary 2026-11-01 – 2026-11-21")
    assert kept.data["report"]["total"] == 8 and kept.data["format"] == "markdown"
    assert kept.body.startswith("# Task summary")
    result = await NONE_TRANSPORT.deliver(kept, None)  # type: ignore[arg-type]
    assert result == {"delivered": False, "report": kept.data["report"]}

    emailed = await draft_for(engine, tenant, report_id, kind="execution_stats", format="html",
                              deliver={"email": {"to": ["ops@acme.example"]}})
    assert (emailed.channel, emailed.to) == ("email", ["ops@acme.example"])
    assert emailed.subject == "Execution stats 2026-11-01 – 2026-11-21" and emailed.body.startswith("<!DOCTYPE")
    assert emailed.data["report"]["finished"] == 6

    hooked = await draft_for(engine, tenant, report_id, format="json",
                             deliver={"webhook": {"url": "https://hooks.example/r", "secret": "hook_key"}})
    report = hooked.data["report"]
    assert hooked.channel == "webhook" and json.loads(hooked.body) == report
    assert hooked.data == {"url": "https://hooks.example/r", "secret": "hook_key", "event": "report.ready",
                           "payload": {"report": report, "format": "json", "content": hooked.body},
                           "report": report}


async def test_none_transport_is_generic():
    assert await NONE_TRANSPORT.deliver(Draft(channel="none", subject="s", body="b"), None) == {  # type: ignore[arg-type]
        "delivered": False, "report": None}
