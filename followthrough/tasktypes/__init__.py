"""The task type registry.

Every module in this package that defines ``TASK_TYPE`` is a task type: adding
a type means adding such a module (see invoice_follow_up.py for the shape).
Each action of a connector is one too: the API and the worker add them at start
(followthrough/connectors/, ``install``).

The modules are found and imported on the first lookup, not when this package
is imported: some types hold other types (a group's subtasks, a project's
planner choosing among all types), so their modules use the registry, and
filling it at import would make every type module import itself.
"""

import importlib
import pkgutil
from collections.abc import Iterator, MutableMapping

from followthrough.domain.seed_vocabulary import canonical_type_name
from followthrough.infra import extras
from followthrough.tasktypes.base import TaskType


class Registry(MutableMapping[str, TaskType]):
    """Task types by name; filled from this package's modules when first read."""

    def __init__(self) -> None:
        self._types: dict[str, TaskType] | None = None

    def _loaded(self) -> dict[str, TaskType]:
        if self._types is None:
            found: dict[str, TaskType] = {}
            for module_info in pkgutil.iter_modules(__path__):
                module = importlib.import_module(f"{__name__}.{module_info.name}")
                task_type = getattr(module, "TASK_TYPE", None)
                if isinstance(task_type, TaskType):
                    if task_type.name in found:
                        raise RuntimeError(f"two modules define the task type {task_type.name!r}")
                    found[task_type.name] = task_type
            self._types = found
        return self._types

    def __getitem__(self, name: str) -> TaskType:
        return self._loaded()[name]

    def __setitem__(self, name: str, task_type: TaskType) -> None:
        self._loaded()[name] = task_type

    def __delitem__(self, name: str) -> None:
        del self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


REGISTRY = Registry()


class UnknownTaskType(LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown task type {name!r}; known types: {', '.join(sorted(REGISTRY))}")


def get_type(name: str) -> TaskType:
    """Look a type up by name; seed-style names (INVOICE_FOLLOW_UP, api_call) are accepted."""
    found = REGISTRY.get(name) or REGISTRY.get(canonical_type_name(name))
    if found is None:
        raise UnknownTaskType(name)
    return found


def type_name(name: str) -> str:
    """The name tasks of this type are recorded under, for filters: a seed-style name mapped onto ours,
    any other name as given (it matches nothing, or a type this process has not loaded)."""
    if name in REGISTRY:
        return name
    ours = canonical_type_name(name)
    return ours if ours in REGISTRY else name


def unserved(task_type: TaskType) -> str | None:
    """Why this installation cannot run tasks of this type (an extra it lacks), or None."""
    reason = extras.missing(task_type.needs_part) if task_type.needs_part else None
    return f"{task_type.name} tasks need a part this installation lacks: {reason}" if reason else None


def unserved_types() -> dict[str, str]:
    return {name: reason for name, task_type in sorted(REGISTRY.items()) if (reason := unserved(task_type))}
