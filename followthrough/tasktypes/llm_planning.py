"""Planning with an LLM: split a task into subtasks of known types.

The model sees the task and, for each type it may use, its description,
default mode and payload schema, and answers
``{"subtasks": [{"type", "title", "mode", "payload"}, ...]}``. An answer that
is not that shape is LlmAnswerInvalid (retryable); a well-formed plan naming
an unknown or disallowed type, an unknown mode, or a payload its type refuses
is InvalidPlan (permanent), with the subtask and field named.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import ValidationError

from followthrough.domain import policies
from followthrough.domain.contracts import TaskInput
from followthrough.domain.lifecycle import TaskMode
from followthrough.infra.llm import (
    LlmAnswerInvalid,
    LlmError,
    LlmNotConfigured,
    LlmUsage,
    api_key,
    complete_json,
    llm_config,
)
from followthrough.infra.secrets import SecretStore
from followthrough.config.settings import Settings
from followthrough.tasktypes import REGISTRY, unserved
from followthrough.tasktypes.rendering import render

SYSTEM_PROMPT = "plan.system.j2"
USER_PROMPT = "plan.prompt.j2"
MAX_SUBTASKS = 20
TITLE_MAX = 500


class InvalidPlan(LlmError):
    error_type = policies.INVALID_PLAN
    retryable = False


@dataclass
class PlannedSubtask:
    type: str
    title: str
    mode: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass
class PlanResult:
    subtasks: list[PlannedSubtask]
    usage: LlmUsage


def plan_messages(task: TaskInput, allowed: list[str]) -> list[dict[str, str]]:
    types = [{"name": name, "description": REGISTRY[name].description, "default_mode": REGISTRY[name].default_mode.value,
              "payload_schema": json.dumps(REGISTRY[name].payload_schema(), sort_keys=True)} for name in allowed]
    variables = {"task": {"title": task.title, "type": task.type, "mode": task.mode,
                          "payload": json.dumps(task.payload, sort_keys=True, default=str)},
                 "types": types, "modes": [m.value for m in TaskMode], "max_subtasks": MAX_SUBTASKS}
    return [{"role": "system", "content": render(SYSTEM_PROMPT, variables)},
            {"role": "user", "content": render(USER_PROMPT, variables)}]


async def plan_subtasks(settings: Settings, task: TaskInput, allowed_types: Iterable[str] | None = None, *,
                        http: httpx.AsyncClient | None = None, secrets: SecretStore | None = None,
                        timeout_seconds: float | None = None) -> PlanResult:
    """Ask the configured LLM for ``task``'s subtasks, each checked against its type; raises LlmError."""
    config = llm_config(settings, task.type)
    if config is None:
        raise LlmNotConfigured(f"no LLM is configured (FOLLOWTHROUGH_LLM_BASE_URL) to plan {task.type} tasks with")
    allowed = sorted(REGISTRY) if allowed_types is None else list(dict.fromkeys(allowed_types))
    # Types this installation lacks a part for are not offered: a subtask of one could not run here.
    allowed = [name for name in allowed if name not in REGISTRY or not unserved(REGISTRY[name])]
    unknown = [name for name in allowed if name not in REGISTRY]
    if unknown or not allowed:
        raise InvalidPlan(f"cannot plan with unknown task types {unknown}" if unknown else "no task types to plan with")
    key = api_key(config, secrets or SecretStore(settings.secrets_file))
    messages = plan_messages(task, allowed)
    if http is None:
        async with httpx.AsyncClient(follow_redirects=False) as own:
            answer, usage = await complete_json(own, config, key, messages, timeout_seconds)
    else:
        answer, usage = await complete_json(http, config, key, messages, timeout_seconds)
    return PlanResult(subtasks=check_plan(answer, allowed), usage=usage)


def check_plan(answer: dict[str, Any], allowed: list[str]) -> list[PlannedSubtask]:
    items = answer.get("subtasks")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise LlmAnswerInvalid(f"LLM plan has no list of subtask objects: {json.dumps(answer)[:200]}")
    if not items:
        raise InvalidPlan("the plan has no subtasks")
    if len(items) > MAX_SUBTASKS:
        raise InvalidPlan(f"the plan has {len(items)} subtasks, more than {MAX_SUBTASKS}")
    return [_subtask(n, item, allowed) for n, item in enumerate(items)]


def _subtask(n: int, item: dict[str, Any], allowed: list[str]) -> PlannedSubtask:
    where = f"subtask {n}"
    type_name = item.get("type")
    if not isinstance(type_name, str) or type_name not in allowed:
        raise InvalidPlan(f"{where}: task type {type_name!r} is not one of {', '.join(allowed)}")
    task_type = REGISTRY[type_name]
    title = item.get("title")
    if not isinstance(title, str) or not title.strip() or len(title) > TITLE_MAX:
        raise InvalidPlan(f"{where}: title must be text of 1 to {TITLE_MAX} characters")
    try:
        mode = TaskMode.parse(str(item.get("mode") or task_type.default_mode.value)).value
    except ValueError as err:
        raise InvalidPlan(f"{where}: {err}") from err
    payload = item.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidPlan(f"{where}: payload must be an object")
    try:
        task_type.payload_model.model_validate(payload)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'payload'}: {e['msg']}" for e in err.errors())
        raise InvalidPlan(f"{where} ({type_name}): payload is invalid: {problems}") from err
    return PlannedSubtask(type=type_name, title=title.strip(), mode=mode, payload=payload)
