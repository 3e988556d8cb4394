"""Logs (docs/observability.md: Logs): one JSON object per line, or one readable line, each carrying the task it
concerns.

A record names its task by whichever of these is known, first found first:

- ``extra={"task_id": …, "tenant_id": …, "workflow_id": …}`` given to the logging call (the API does this);
- the ``temporal_workflow`` / ``temporal_activity`` details Temporal's ``workflow.logger`` and
  ``activity.logger`` put in ``extra``;
- the fields bound for the running activity by ``ActivityLogContext`` (a worker interceptor taking
  ``task_id`` and ``tenant_id`` from the activity's input), and the activity's own ``activity.info()``,
  so a plain ``logging.getLogger(...)`` call inside an activity carries them too.
"""

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from followthrough.infra import redaction
FIELDS = ("task_id", "tenant_id", "workflow_id", "run_id", "activity")
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("followthrough_log_fields", default={})


@contextmanager
def bound(**fields: str | None) -> Iterator[None]:
    """Every record logged inside (in this task and the tasks it starts) carries ``fields``."""
    token = _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v}})
    try:
        yield
    finally:
        _bound.reset(token)


def task_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The task, workflow, run, tenant and activity a record concerns, as far as known."""
    found: dict[str, Any] = {}

    def take(**values: Any) -> None:
        for name, value in values.items():
            if value and name not in found:
                found[name] = value

    take(**{name: getattr(record, name, None) for name in FIELDS})
    details = getattr(record, "temporal_workflow", None)
    if isinstance(details, Mapping):
        take(workflow_id=details.get("workflow_id"), run_id=details.get("run_id"))
    details = getattr(record, "temporal_activity", None)
    if isinstance(details, Mapping):
        take(workflow_id=details.get("workflow_id"), run_id=details.get("workflow_run_id"),
             activity=details.get("activity_type"))
    take(**_bound.get())
    if activity.in_activity():
        info = activity.info()
        take(workflow_id=info.workflow_id, run_id=info.workflow_run_id, activity=info.activity_type)
    return found


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", task_id?, tenant_id?, workflow_id?, run_id?, activity?, exc?}``"""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        } | task_fields(record)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # Never a secret value this process resolved (followthrough/infra/redaction.py), whoever logged it.
        return redaction.redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message> [task_id=… workflow_id=…]``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        text = super().formatMessage(record)
        fields = task_fields(record)
        return f"{text} [{' '.join(f'{k}={v}' for k, v in fields.items())}]" if fields else text

    def format(self, record: logging.LogRecord) -> str:
        return redaction.redact(super().format(record))  # the traceback too


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure(log_format: str = "json", level: str = "INFO") -> None:
    """One handler on the root logger, to stderr, in ``log_format``; every library's records go through it
    (uvicorn's included, when it is started with ``log_config=None``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    redact_access_log()
    # Temporal's loggers would append their details to the message as a dict; they are fields here.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


# ---- credentials in logged URLs ----------------------------------------------

# An approval link's token is the credential that decides (it sits in the path); clients sometimes put a
# key in the query string. A URL in a record keeps its shape, with those parts replaced.
_LINK_TOKEN = re.compile(r"(/approval-links/)[^/?#\s\"]+")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:token|key|api_key|apikey|access_token|secret|password|signature|sig)=)"
                           r"[^&#\s\"]*")
REDACTED = "[redacted]"


def redact_url(text: str) -> str:
    return _QUERY_SECRET.sub(rf"\g<1>{REDACTED}", _LINK_TOKEN.sub(rf"\g<1>{REDACTED}", text))


class RedactUrlSecrets(logging.Filter):
    """Rewrites the URLs in a record's message and arguments (uvicorn's access log passes the path as one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_url(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_url(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_url(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


# The loggers that write request URLs: uvicorn's access log, and httpx's "HTTP Request: <method> <url>".
URL_LOGGERS = ("uvicorn.access", "httpx")


def redact_access_log() -> None:
    """Put the filter on the loggers above, once each (on the logger itself, so every handler, whatever
    logging configuration uvicorn was given, sees the redacted record)."""
    for name in URL_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactUrlSecrets) for f in logger.filters):
            logger.addFilter(RedactUrlSecrets())


# ---- the worker's side: which task an activity works for --------------------

def _input_fields(arg: Any) -> dict[str, str | None]:
    task = getattr(arg, "task", None)
    if isinstance(task, Mapping):  # a notification's task snapshot
        return {"task_id": task.get("id"), "tenant_id": task.get("tenant_id")}
    return {"task_id": getattr(arg, "task_id", None) or getattr(task, "task_id", None),
            "tenant_id": getattr(arg, "tenant_id", None) or getattr(task, "tenant_id", None)}


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        fields = _input_fields(input.args[0]) if input.args else {}
        with bound(**fields):
            return await self.next.execute_activity(input)


class ActivityLogContext(Interceptor):
    """A worker interceptor: every activity's log records carry the task id and tenant of its input."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next)
