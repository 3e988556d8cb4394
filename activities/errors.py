"""Turning exceptions into ApplicationErrors the workflow can read: each carries
the attempt number, and permanent failures are marked non-retryable."""

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from followthrough import policies
from followthrough.contracts import TaskInput
from followthrough.llm.client import LlmError
from followthrough.tasktypes import UnknownTaskType, get_type
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
    try:
        return task_type, task_type.payload_model.model_validate(task.payload)
    except ValidationError as err:
        raise permanent(f"payload is invalid: {err}", policies.INVALID_PAYLOAD) from err


def reports_attempt(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except ApplicationError as err:
            raise ApplicationError(err.message, {"attempt": activity.info().attempt}, type=err.type,
                                   non_retryable=err.non_retryable, next_retry_delay=err.next_retry_delay) from err
        except Exception as err:
            raise ApplicationError(str(err) or type(err).__name__, {"attempt": activity.info().attempt},
                                   type=type(err).__name__) from err

    return wrapper


def llm_failure(err: LlmError) -> ApplicationError:
    """An LLM error as Temporal sees it: retryable or not, and a Retry-After as the next retry's delay."""
    delay = timedelta(seconds=err.retry_after) if err.retry_after is not None else None
    return ApplicationError(str(err), type=err.error_type, non_retryable=not err.retryable, next_retry_delay=delay)
