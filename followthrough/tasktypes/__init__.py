"""The task type registry. Adding a type: write a module that defines
``TASK_TYPE`` and add it to ``_MODULES`` below."""

from followthrough.tasktypes import invoice_follow_up
from followthrough.tasktypes.base import TaskType

_MODULES = [invoice_follow_up]

REGISTRY: dict[str, TaskType] = {m.TASK_TYPE.name: m.TASK_TYPE for m in _MODULES}


class UnknownTaskType(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task type {name!r}; known types: {', '.join(sorted(REGISTRY))}")


def get_type(name: str) -> TaskType:
    """Look a type up by name; seed-style names (INVOICE_FOLLOW_UP) are accepted."""
    found = REGISTRY.get(name) or REGISTRY.get(name.strip().lower())
    if found is None:
        raise UnknownTaskType(name)
    return found
