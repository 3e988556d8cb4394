"""Drafting with an LLM: the type's prompt template, rendered from the task, asks for subject and body.

Only the text comes from the model. Channel, recipients and any request data
stay those of the type's own (template) draft, which is built from the payload
first and given to the model as the baseline; guardrails then run on the result.
"""

from dataclasses import asdict, replace
from typing import Any

import httpx
from pydantic import BaseModel

from followthrough.domain.contracts import Draft, DraftOrigin, TaskInput
from followthrough.infra.llm import LlmAnswerInvalid, LlmConfig, complete_json
from followthrough.tasktypes.base import Blocked, TaskType
from followthrough.tasktypes.rendering import render

SYSTEM_PROMPT = "draft.system.j2"
SUBJECT_MAX = 998
BODY_MAX = 100_000
BLOCKED_MAX = 1000


def draft_messages(task_type: TaskType, task: TaskInput, payload: BaseModel, baseline: Draft) -> list[dict[str, str]]:
    """The chat messages for a draft; a template that does not render raises jinja2's TemplateError."""
    assert task_type.prompt is not None
    variables = {"task": {"title": task.title, "type": task.type, "tenant_id": task.tenant_id},
                 "payload": payload.model_dump(mode="json"), "draft": asdict(baseline)}
    return [{"role": "system", "content": render(SYSTEM_PROMPT, variables)},
            {"role": "user", "content": render(task_type.prompt, variables)}]


async def write_draft(http: httpx.AsyncClient, config: LlmConfig, key: str, messages: list[dict[str, str]],
                      baseline: Draft, timeout_seconds: float | None = None) -> tuple[Draft, DraftOrigin]:
    answer, usage = await complete_json(http, config, key, messages, timeout_seconds)
    blocked = answer.get("blocked")
    if isinstance(blocked, str) and blocked.strip():
        raise Blocked(" ".join(blocked.split())[:BLOCKED_MAX], DraftOrigin(
            drafter="llm", model=usage.model, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, latency_ms=usage.latency_ms))
    subject = " ".join(_text(answer, "subject").split())  # one header line, whatever the model wrote
    body = _text(answer, "body").strip()
    if len(subject) > SUBJECT_MAX or len(body) > BODY_MAX:
        raise LlmAnswerInvalid(f"LLM draft is too long (subject {len(subject)}, body {len(body)} characters)")
    origin = DraftOrigin(drafter="llm", model=usage.model, prompt_tokens=usage.prompt_tokens,
                         completion_tokens=usage.completion_tokens, latency_ms=usage.latency_ms,
                         confidence=confidence(answer.get("confidence")))
    return replace(baseline, subject=subject, body=body), origin


def confidence(value: Any) -> float | None:
    """0..1 (a percentage is scaled down); None when the model gave none."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().rstrip("%"))
        except ValueError:
            raise LlmAnswerInvalid(f"LLM confidence is not a number: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise LlmAnswerInvalid(f"LLM confidence is not a number: {value!r}")
    if 1 < value <= 100:
        value = value / 100
    if not 0 <= value <= 1:
        raise LlmAnswerInvalid(f"LLM confidence {value!r} is outside 0..1")
    return round(float(value), 4)


def _text(answer: dict[str, Any], name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value.strip():
        raise LlmAnswerInvalid(f"LLM answer has no {name}: {sorted(answer)}")
    return value
