"""What the Temporal Web UI shows for a task's run: the summaries of its activities and timers and its
current details ("Waiting for approval from alice, bob (1 of 2 given) until …").

Plain, deterministic text from the task and the workflow's state. Summaries name the task's type and
channel, never a recipient; they and the details are user metadata, encrypted by the payload codec.
"""

from datetime import datetime, timedelta, timezone

from followthrough.domain.contracts import PauseRequest, TaskInput
from followthrough.domain.lifecycle import Stage, TaskStatus

# The memo entry holding the API's base URL (``…/api/v1``), set by the API when it starts a task and
# passed on to subtasks, so that a subtask's details can link to it.
API_MEMO = "api"

# What a task of each type drafts and sends; other types by their name.
_WORK = {
    "invoice_follow_up": "invoice follow-up email",
    "email": "email",
    "reminder": "reminder",
    "webhook": "webhook",
    "http_request": "HTTP request",
    "report": "report",
    "campaign": "campaign",
    "group": "group of subtasks",
    "cadence": "cadence",
    "project": "project",
    "browser": "browser steps",
    "agent": "agent task",
}
_CHANNELS = {"http": "HTTP", "email": "email", "webhook": "webhook", "browser": "Chromium"}


def work(task_type: str) -> str:
    return _WORK.get(task_type, task_type.replace("_", " "))


def when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def duration(span: timedelta) -> str:
    """``24h``, ``3d``, ``1h 30m``, ``45s``: the largest units, at most two; days from 48 hours on."""
    seconds = max(0, round(span.total_seconds()))
    parts = []
    units = (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)) if seconds >= 2 * 86_400 else \
        (("h", 3600), ("m", 60), ("s", 1))
    for unit, size in units:
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2]) or "0s"


def start_details(task: TaskInput, api: str | None) -> str:
    """A run's static details (Markdown): what the task is, and its link in the API."""
    details = f"**{task.type}** task `{task.task_id}` ({task.mode} mode)"
    return f"{details}\n\n[Task in the API]({api}/tasks/{task.task_id})" if api else details


def subtask_details(task: TaskInput, parent_workflow_id: str, api: str | None) -> str:
    details = (f"**{task.type}** subtask {task.subtask_index} of task `{task.parent_id}` (run "
               f"`{parent_workflow_id}`), {task.mode} mode")
    if api:
        details += f"\n\n[Subtask in the API]({api}/tasks/{task.task_id}) · [Parent task]({api}/tasks/{task.parent_id})"
    return details


# ---- activity and timer summaries ---------------------------------------------

def draft_summary(task: TaskInput) -> str:
    return f"Draft {work(task.type)}"


def send_summary(task: TaskInput, channel: str) -> str:
    what, by = work(task.type), _CHANNELS.get(channel, channel)
    return f"Send {what}" if by.lower() in what.lower() else f"Send {what} by {by}"


def plan_summary(task: TaskInput) -> str:
    return f"Plan the subtasks of this {work(task.type)}"


def due_wait_summary(due_at: datetime) -> str:
    return f"Wait until due ({when(due_at)})"


def step_wait_summary(index: int, total: int, step: TaskInput, until: datetime) -> str:
    return f"Wait before step {index} of {total}, {work(step.type)} ({when(until)})"


def approval_wait_summary(wait: timedelta, then: str | None = None, *, person: bool = False) -> str:
    waiting = "Wait for the person to do it" if person else "Wait for approval"
    return f"{waiting}, then {then} ({duration(wait)})" if then else f"{waiting} ({duration(wait)})"


# ---- current details ---------------------------------------------------------------

def deciders(approvers: list[str], roles: list[str]) -> str:
    named = ", ".join(approvers)
    holders = " or ".join(roles)
    if named and holders:
        return f"{named} or a holder of role {holders}"
    if holders:
        return f"a holder of role {holders}"
    return named or "anyone who may decide"


def awaiting(task: TaskInput, stage: Stage, allowed: list[str], given: int, deadline: datetime | None) -> str:
    until = f" until {when(deadline)}" if deadline else ""
    who = deciders(allowed, task.approver_roles)
    if stage is Stage.AWAITING_PERSON:
        return f"Waiting for {who} to do the work and mark it done{until}"
    count = f" ({given} of {task.approvals_required} given)" if task.approvals_required > 1 else ""
    return f"Waiting for approval from {who}{count}{until}"


def paused(request: PauseRequest, before: TaskStatus) -> str:
    reason = f": {request.reason}" if request.reason else ""
    return f"Paused by {request.actor_id or request.actor_type}{reason} (was {before.value}); resume to go on"


def subtasks(progress: dict[str, int]) -> str:
    done, failed, total = progress.get("done", 0), progress.get("failed", 0), progress.get("total", 0)
    ended = f"{done} done, {failed} failed" if failed else f"{done} done"
    return f"Waiting on {total} subtask{'s' if total != 1 else ''} ({ended})"


def cadence(step: int, total: int, progress: dict[str, int] | None, waiting_until: datetime | None) -> str:
    done = (progress or {}).get("done", 0)
    if waiting_until is not None:
        return f"Waiting until {when(waiting_until)} before step {step} of {total} ({done} done)"
    return f"Running step {step} of {total} ({done} done)"


def in_progress(task: TaskInput, stage: Stage) -> str:
    if stage is Stage.DRAFTING:
        return f"Drafting the {work(task.type)}"
    if stage is Stage.PLANNING:
        return "Planning the subtasks"
    if stage is Stage.SENDING:
        return f"Sending the {work(task.type)}"
    if stage is Stage.THINKING:
        return "Asking the model for its next step"
    if stage is Stage.USING_TOOL:
        return "Running a tool the model asked for"
    return "In progress"


def ended(status: TaskStatus, actor_type: str, actor_id: str | None, step: str | None = None) -> str:
    by = f" by {actor_id}" if actor_id and actor_type != "system" else ""
    if status is TaskStatus.FAILED:
        return f"Failed at the {step} step" if step else "Failed"
    if status is TaskStatus.EXPIRED:
        return "Expired: no decision before the deadline"
    return f"{status.value.capitalize()}{by}"
