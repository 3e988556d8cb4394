"""What a task type is: its payload model, how it drafts, how it assesses risk,
and the channel it sends through."""

from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from followthrough.contracts import Draft
from followthrough.lifecycle import TaskMode
from followthrough.settings import Settings


@dataclass(frozen=True)
class TaskType:
    name: str
    description: str
    payload_model: type[BaseModel]
    # Channel the send activity delivers through ("email" goes to the outbox).
    channel: str
    draft: Callable[[BaseModel], Draft]
    # Guardrails: reasons why a person must approve; empty means within limits.
    assess: Callable[[BaseModel, Draft, Settings], list[str]]
    default_mode: TaskMode = TaskMode.REVIEW

    def payload_schema(self) -> dict:
        return self.payload_model.model_json_schema()
