"""A task definition's Temporal Schedule: its id, its spec, and the calls that change it.

The schedule's action starts ``DefinitionRunWorkflow`` for the definition; the
workflow's activity renders the definition as it is at that moment, so
editing a definition's templates needs no change to its schedule.
"""

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from followthrough.domain.contracts import DefinitionRunInput

WORKFLOW = "DefinitionRunWorkflow"
# A firing missed while Temporal was down is made up within this window, not for a year (Temporal's default).
CATCHUP_WINDOW = timedelta(minutes=10)


def schedule_id_for(definition_id: str) -> str:
    return f"definition-{definition_id}"


def _schedule(settings_task_queue: str, definition_id: str, tenant_id: str, name: str, cron: str, timezone: str,
              paused: bool = False, note: str | None = None) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            WORKFLOW, DefinitionRunInput(definition_id=definition_id, tenant_id=tenant_id),
            # Temporal appends each firing's time, so every run has its own id.
            id=f"definition-run-{definition_id}", task_queue=settings_task_queue,
            execution_timeout=timedelta(hours=1),
            static_summary=f"Scheduled run of task definition {name[:150]}"),
        spec=ScheduleSpec(cron_expressions=[cron], time_zone_name=timezone),
        # Each run only creates a task, in well under a second: let them overlap rather than drop one.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.ALLOW_ALL, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(note=note or f"task definition {name[:150]}", paused=paused),
    )


async def create(client: Client, task_queue: str, definition_id: str, tenant_id: str, name: str, cron: str,
                 timezone: str) -> None:
    await client.create_schedule(schedule_id_for(definition_id),
                                 _schedule(task_queue, definition_id, tenant_id, name, cron, timezone))


async def update(client: Client, task_queue: str, definition_id: str, tenant_id: str, name: str, cron: str,
                 timezone: str) -> None:
    """New spec and action, keeping whether it is paused."""
    def change(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        return ScheduleUpdate(schedule=_schedule(task_queue, definition_id, tenant_id, name, cron, timezone,
                                                 paused=state.paused, note=state.note))

    await handle(client, definition_id).update(change)


def handle(client: Client, definition_id: str) -> ScheduleHandle:
    return client.get_schedule_handle(schedule_id_for(definition_id))


async def describe(client: Client, definition_id: str) -> ScheduleDescription:
    return await handle(client, definition_id).describe()


async def trigger(client: Client, definition_id: str) -> None:
    await handle(client, definition_id).trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
