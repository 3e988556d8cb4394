"""Turning exceptions into ApplicationErrors the workflow can read: each carries
the attempt number, and permanent failures are marked non-retryable."""

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from followthrough.infra import redaction
from followthrough.domain import policies
from followthrough.domain.contracts import TaskInput
from followthrough.infra.llm import LlmError
from followthrough.tasktypes import UnknownTaskType, get_type, unserved
from followthrough.tasktypes.base import TaskType

P = ParamSpec("P")
R = TypeVar("R")


def permanent(message: str, error_type: str) -> ApplicationError:
    return ApplicationError(message, type=error_type, non_retryable=True)


def typed_payload(task: TaskInput) -> tuple[TaskType, BaseModel]:
    """The task's type and its payload validated by that type; either failing is permanent."""
    try:
        task_type = get_type(task.type)
    except UnknownTaskType as err:
        raise permanent(str(err), policies.UNKNOWN_TASK_TYPE) from err
    if reason := unserved(task_type):  # refused at creation by an API that has the part; not worth a retry here
        raise permanent(reason, policies.PART_MISSING)
    try:
        return task_type, task_type.payload_model.model_validate(task.payload)
    except ValidationError as err:
        raise permanent(f"payload is invalid: {err}", policies.INVALID_PAYLOAD) from err


def _scrubbed(err: BaseException | None, depth: int = 0) -> BaseException | None:
    """A copy of an exception's cause chain with every secret value redacted from its messages: Temporal
    stores each cause's message (and it reaches the task's error and the logs), and a library's message may
    quote what it refused (httpx quotes a header value). Stack traces name code only and are kept."""
    if err is None or depth > 8:
        return None
    kind = err.type if isinstance(err, ApplicationError) else type(err).__name__
    text = err.message if isinstance(err, ApplicationError) else str(err)
    copy = ApplicationError(redaction.redact(text) or type(err).__name__, type=kind,
                            non_retryable=getattr(err, "non_retryable", False))
    copy.__cause__ = _scrubbed(err.__cause__ or (None if err.__suppress_context__ else err.__context__), depth + 1)
    return copy.with_traceback(err.__traceback__)


def reports_attempt(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Every failure of an activity as an ApplicationError with its attempt number, its message and causes
    redacted of secret values: where an error becomes text that is stored, logged and shown."""
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ApplicationError as err:
            raise ApplicationError(redaction.redact(err.message), {"attempt": activity.info().attempt},
                                   type=err.type, non_retryable=err.non_retryable,
                                   next_retry_delay=err.next_retry_delay) from _scrubbed(err.__cause__)
        except Exception as err:
            raise ApplicationError(redaction.redact(str(err)) or type(err).__name__,
                                   {"attempt": activity.info().attempt}, type=type(err).__name__) \
                from _scrubbed(err.__cause__ or err.__context__)

    return wrapper


def llm_failure(err: LlmError) -> ApplicationError:
    """An LLM error as Temporal sees it: retryable or not, and a Retry-After as the next retry's delay."""
    delay = timedelta(seconds=err.retry_after) if err.retry_after is not None else None
    return ApplicationError(str(err), type=err.error_type, non_retryable=not err.retryable, next_retry_delay=delay)
