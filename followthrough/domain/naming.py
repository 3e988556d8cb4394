"""Names and links that identify a task outside the mirror."""

import re

from followthrough.domain.lifecycle import Priority

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Temporal task priority: 1 is served first, 5 last.
TEMPORAL_PRIORITY = {Priority.URGENT: 1, Priority.HIGH: 2, Priority.NORMAL: 3, Priority.LOW: 4}


def workflow_id_for(task_id: str, task_type: str, subject_ref_id: str | None) -> str:
    """``task-<type>-<subject>-<short id>``: readable in the Web UI, unique by the id."""
    subject = _UNSAFE.sub("_", subject_ref_id or "").strip("_")[:64] or "none"
    return f"task-{_UNSAFE.sub('_', task_type)}-{subject}-{task_id.replace('-', '')[:12]}"


def temporal_ui_link(ui_url: str, namespace: str, workflow_id: str) -> str:
    return f"{ui_url.rstrip('/')}/namespaces/{namespace}/workflows/{workflow_id}"
