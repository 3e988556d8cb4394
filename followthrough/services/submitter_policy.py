"""What a submitter may set per task, measured against the policy it would override.

A task's mode, retries and subtasks are the submitter's to choose only as far as the type's and the tenant's
policy allows: a per-task setting may tighten it, never loosen it. The API refuses a looser request (422,
naming what it may send instead); what a planner decides at run time (a model's plan, a type's defaults) is
clamped to the same bounds.
"""

from dataclasses import fields, replace
from typing import Any

from followthrough.domain.contracts import RetrySpec
from followthrough.domain.lifecycle import TaskMode
from followthrough.config.settings import Settings

ANY = "*"


def loosest_mode(settings: Settings, tenant_id: str, task_type: str) -> TaskMode:
    """The loosest mode this tenant's tasks of this type may run in: the strictest of every entry of
    FOLLOWTHROUGH_MODE_LIMITS that names them (tenant or *, type or *); no entry: autonomous."""
    limits = [TaskMode.parse(by_type[name])
              for tenant in (tenant_id, ANY) if (by_type := settings.mode_limits.get(tenant))
              for name in (task_type, ANY) if name in by_type]
    return min(limits, key=lambda mode: mode.looseness, default=TaskMode.AUTONOMOUS)


def looser(mode: TaskMode, than: TaskMode) -> bool:
    return mode.looseness > than.looseness


def allowed_modes(limit: TaskMode) -> list[str]:
    return [m.value for m in TaskMode if not looser(m, limit)]


def clamp_mode(mode: TaskMode, limit: TaskMode) -> TaskMode:
    return mode.no_looser_than(limit)


def mode_refusal(mode: TaskMode, limit: TaskMode, what: str) -> str | None:
    """Why ``mode`` may not be asked for, or None."""
    if not looser(mode, limit):
        return None
    return f"{mode.value} is looser than {what} allows (at most {limit.value}); send one of: " \
           f"{', '.join(allowed_modes(limit))}"


# Retry overrides that may not exceed the type's own: more attempts or longer waits between them would send
# later and more often than the type allows. A shorter first interval or another backoff stays free.
CAPPED_RETRY_FIELDS = ("max_attempts", "maximum_interval_seconds")


def retry_refusals(overrides: dict[str, Any], defaults: RetrySpec) -> dict[str, str]:
    """Per field, why an override of the type's retry policy is refused."""
    known = {f.name for f in fields(RetrySpec)}
    refused = {}
    for name in CAPPED_RETRY_FIELDS:
        if name in known and name in overrides and overrides[name] > getattr(defaults, name):
            refused[name] = f"at most the type's {getattr(defaults, name):g}: a task may tighten its retries, " \
                            f"not loosen them"
    return refused


def clamp_retry(spec: RetrySpec | None, defaults: RetrySpec) -> RetrySpec:
    """``spec`` held to the type's caps (a new run of a task under today's policy): never more attempts or
    longer waits than the type allows now."""
    spec = spec or RetrySpec()  # what a run without one gets (followthrough/domain/policies.py)
    return replace(spec, **{name: min(getattr(spec, name), getattr(defaults, name)) for name in CAPPED_RETRY_FIELDS})
