"""The custom search attributes a task's run carries, for finding runs in the Temporal Web UI and CLI
(``TaskStatus="awaiting_approval" AND TenantId="acme"``).

Search attributes are stored in clear by Temporal (the payload codec does not touch them), so they hold
only ids and vocabulary: never a title, an email address or a name. The workflow keeps ``TaskStatus`` (and
``Mode``, when a drafter hands a task to a person) current; the rest are set when a run starts.
"""


from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from followthrough.domain.contracts import TaskInput

TASK_STATUS = SearchAttributeKey.for_keyword("TaskStatus")
TASK_TYPE = SearchAttributeKey.for_keyword("TaskType")
TENANT_ID = SearchAttributeKey.for_keyword("TenantId")
OWNER_ID = SearchAttributeKey.for_keyword("OwnerId")
SUBJECT_REF = SearchAttributeKey.for_keyword("SubjectRef")
PRIORITY = SearchAttributeKey.for_keyword("Priority")
MODE = SearchAttributeKey.for_keyword("Mode")

ALL: tuple[SearchAttributeKey[str], ...] = (TASK_STATUS, TASK_TYPE, TENANT_ID, OWNER_ID, SUBJECT_REF, PRIORITY, MODE)


def subject_ref(task: TaskInput) -> str | None:
    """``<type>:<id>``: the business object the task is about (``INVOICE:INV-123``)."""
    if not task.subject_ref_id:
        return None
    return f"{task.subject_ref_type}:{task.subject_ref_id}" if task.subject_ref_type else task.subject_ref_id


def values_for(task: TaskInput, status: str = "pending") -> dict[SearchAttributeKey[str], str]:
    """Every attribute a task's run carries, as it starts; those without a value are left out."""
    values: dict[SearchAttributeKey[str], str | None] = {
        TASK_STATUS: status, TASK_TYPE: task.type, TENANT_ID: task.tenant_id, OWNER_ID: task.owner_id,
        SUBJECT_REF: subject_ref(task), PRIORITY: task.priority, MODE: task.mode,
    }
    # Keyword values are limited in size by Temporal; ids here are short, but never fail a start on one.
    return {key: value[:255] for key, value in values.items() if value}


def typed_for(task: TaskInput) -> TypedSearchAttributes:
    """The attributes to start a task's run (or a subtask's child run) with."""
    return TypedSearchAttributes([SearchAttributePair(key, value) for key, value in values_for(task).items()])


def dev_server_arguments() -> list[str]:
    """``--search-attribute Name=Keyword`` for each, for ``temporal server start-dev``."""
    arguments: list[str] = []
    for key in ALL:
        arguments += ["--search-attribute", f"{key.name}={key._metadata_type}"]
    return arguments
