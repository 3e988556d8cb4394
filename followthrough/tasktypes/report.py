"""report: figures over a tenant's tasks (seed 004's report generation), optionally delivered.

Drafting reads the mirror (ctx.engine) and renders the figures as JSON,
Markdown or HTML. The draft's channel follows ``deliver``: email, webhook, or
none (the figures then live in the task's draft and result only).
"""

import json
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Literal

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from pydantic import (AnyHttpUrl, BaseModel, ConfigDict, EmailStr, Field, ValidationInfo, field_validator,
                      model_validator)

from followthrough.domain.contracts import Draft
from followthrough.domain.guardrails import RecipientDomains, TargetHosts
from followthrough.domain.lifecycle import TaskMode
from followthrough.db.reports import build_report
from followthrough.infra.secrets import SECRET_NAME
from followthrough.tasktypes.base import DraftContext, TaskType
from followthrough.tasktypes.rendering import TEMPLATES

MAX_RANGE = timedelta(days=366)
TITLES = {"task_summary": "Task summary", "execution_stats": "Execution stats"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class EmailTarget(_Strict):
    to: list[EmailStr] = Field(min_length=1, max_length=50)


class WebhookTarget(_Strict):
    url: AnyHttpUrl
    # The NAME of a secret (followthrough/infra/secrets.py); its value never enters the payload.
    secret: str = Field(pattern=SECRET_NAME.pattern)


class Deliver(_Strict):
    email: EmailTarget | None = None
    webhook: WebhookTarget | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "Deliver":
        if (self.email is None) == (self.webhook is None):
            raise ValueError("give exactly one of email or webhook")
        return self


class ReportPayload(_Strict):
    kind: Literal["task_summary", "execution_stats"]
    start: datetime = Field(description="Tasks created at or after this instant (naive means UTC).")
    end: datetime = Field(description="Tasks created before this instant; at most 366 days after start.")
    format: Literal["json", "markdown", "html"] = "markdown"
    deliver: Deliver | None = None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: datetime, info: ValidationInfo) -> datetime:
        start = info.data.get("start")  # absent when start itself was invalid
        if start is not None and end <= start:
            raise ValueError("end must be after start")
        if start is not None and end - start > MAX_RANGE:
            raise ValueError(f"the range may span at most {MAX_RANGE.days} days")
        return end


# ---- rendering ----------------------------------------------------------------

def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate * 100:.1f} %"


def _secs(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _cell(value: Any) -> str:
    # Keep a Markdown table intact, and raw HTML out of it, whatever a type name holds.
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


@lru_cache
def _environment() -> SandboxedEnvironment:
    # Its own environment: HTML needs autoescape, which the shared one (plain text) keeps off.
    env = SandboxedEnvironment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                               autoescape=lambda name: bool(name and name.endswith(".html.j2")))
    env.filters.update(pct=_pct, secs=_secs, cell=_cell)
    return env


def _when(value: str) -> str:
    moment = datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d") if moment.time() == datetime.min.time() else moment.strftime(
        "%Y-%m-%d %H:%M UTC")


def report_title(report: dict[str, Any]) -> str:
    """E.g. "Task summary 2026-11-01 – 2026-11-21"."""
    return f"{TITLES[report['kind']]} {_when(report['start'])} – {_when(report['end'])}"


def render_report(report: dict[str, Any], fmt: str, title: str | None = None) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False)
    name = {"markdown": "report.md.j2", "html": "report.html.j2"}[fmt]
    return _environment().get_template(name).render(report=report, title=title or report_title(report)).strip()


# ---- drafting -----------------------------------------------------------------

async def draft(payload: ReportPayload, ctx: DraftContext) -> Draft:
    if ctx.engine is None:
        raise RuntimeError("the report type needs the mirror's database")
    report = await build_report(ctx.engine, payload.kind, ctx.task.tenant_id, payload.start, payload.end,
                                exclude_task_id=ctx.task.task_id)
    subject = report_title(report)
    content = render_report(report, payload.format, subject)
    target = payload.deliver
    if target is not None and target.webhook is not None:
        # The webhook transport's contract: url, secret name, event and payload.
        url, secret = str(target.webhook.url), target.webhook.secret
        return Draft(channel="webhook", subject=subject, body=content, data={
            "url": url, "secret": secret, "event": "report.ready",
            "payload": {"report": report, "format": payload.format, "content": content}, "report": report})
    data = {"report": report, "format": payload.format}
    if target is not None and target.email is not None:
        return Draft(channel="email", subject=subject, body=content, to=[str(a) for a in target.email.to],
                     data=data)
    return Draft(channel="none", subject=subject, body=content, data=data)


TASK_TYPE = TaskType(
    name="report",
    description=("Figures over a tenant's tasks in a date range (task_summary or execution_stats) as JSON, "
                 "Markdown or HTML; kept on the task, or delivered by email or webhook (seed 004)."),
    payload_model=ReportPayload,
    channel="none",
    draft=draft,
    # A tenant's allowed domains / hosts (settings.guardrails) apply to deliveries too.
    guardrails=(RecipientDomains(), TargetHosts()),
    outbound_urls=lambda payload: ({"deliver.webhook.url": str(payload.deliver.webhook.url)}
                                   if payload.deliver and payload.deliver.webhook else {}),
    secret_refs=lambda payload: ({"deliver.webhook.secret": (payload.deliver.webhook.secret,
                                                             str(payload.deliver.webhook.url))}
                                 if payload.deliver and payload.deliver.webhook else {}),
    default_mode=TaskMode.AUTONOMOUS,
)
