"""An agent task's report: its figures, answer and transcript as JSON, Markdown or HTML.

Built from the task's row (its result holds what the loop recorded, see
followthrough/workflows/agent_loop.py); rendered with the task types' templates
(agent_report.md.j2, agent_report.html.j2), HTML autoescaped.
"""

import json
from functools import lru_cache
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined
from jinja2.sandbox import SandboxedEnvironment

from followthrough.tasktypes.rendering import TEMPLATES

FORMATS = ("json", "markdown", "html")
MEDIA_TYPES = {"json": "application/json", "markdown": "text/markdown; charset=utf-8",
               "html": "text/html; charset=utf-8"}


def agent_report(task: dict[str, Any]) -> dict[str, Any]:
    """The report's content from a task (id, title, status, timestamps and its result)."""
    result = task.get("result") or {}
    return {
        "task_id": task["id"], "title": task["title"], "status": task["status"],
        "created_at": task.get("created_at"), "started_at": task.get("started_at"),
        "finished_at": task.get("finished_at"), "error": task.get("error"),
        "ended_by": result.get("ended_by"), "answer": result.get("answer"), "model": result.get("model"),
        "turns": result.get("turns"), "max_turns": result.get("max_turns"), "messages": result.get("messages"),
        "tool_calls": result.get("tool_calls"), "tool_calls_by_tool": result.get("tool_calls_by_tool") or {},
        "refused_tool_calls": result.get("refused_tool_calls"), "usage": result.get("usage") or {},
        "duration_seconds": result.get("duration_seconds"), "transcript": result.get("transcript") or [],
    }


def _cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


def _calls(message: dict[str, Any]) -> list[str]:
    return [f"{c['function']['name']}({c['function'].get('arguments') or ''})" for c in message.get("tool_calls") or []]


@lru_cache
def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(loader=FileSystemLoader(TEMPLATES), undefined=StrictUndefined,
                               autoescape=lambda name: bool(name and name.endswith(".html.j2")))
    env.filters.update(cell=_cell, calls=_calls)
    return env


def render_agent_report(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False, default=str)
    name = {"markdown": "agent_report.md.j2", "html": "agent_report.html.j2"}[fmt]
    return _environment().get_template(name).render(report=report).strip() + "\n"
