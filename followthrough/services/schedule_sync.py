"""Keeping a definition's Temporal Schedule in step with the definition, and finding definitions."""

from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, ScheduleAlreadyRunningError
from temporalio.service import RPCError, RPCStatusCode

from followthrough.services import schedules
from followthrough.services.errors import Conflict, NotFound, invalid
from followthrough.config.settings import Settings
from followthrough.db.tables import TaskDefinition


async def definition_or_404(session: AsyncSession, definition_id: str, deleted_too: bool = False) -> TaskDefinition:
    row = await session.get(TaskDefinition, definition_id) if len(definition_id) <= 36 else None
    if row is None or (row.deleted_at is not None and not deleted_too):
        raise NotFound(f"definition {definition_id!r} not found")
    return row


def scheduled_or_409(row: TaskDefinition) -> TaskDefinition:
    if row.cron is None:
        raise Conflict(f"definition {row.id!r} has no schedule; give it a cron expression first")
    return row


async def sync_schedule(settings: Settings, temporal: Client, row: TaskDefinition,
                        old: tuple[str | None, str, str] | None = None) -> None:
    """Create, change or delete the schedule so that it matches the definition's cron, time zone and name.

    ``old`` is (cron, timezone, name) before the change; None for a new definition. A spec Temporal
    refuses is a 422.
    """
    old_cron = old[0] if old else None
    if row.cron is None:
        if old_cron is not None:
            await forget_schedule(temporal, row)
        return
    args = (temporal, settings.task_queue, row.id, row.tenant_id, row.name, row.cron, row.timezone)
    try:
        if old_cron is None:
            try:
                await schedules.create(*args)
            except ScheduleAlreadyRunningError:  # left behind by an earlier attempt: make it this one
                await schedules.update(*args)
        elif old != (row.cron, row.timezone, row.name):
            try:
                await schedules.update(*args)
            except RPCError as err:
                if err.status != RPCStatusCode.NOT_FOUND:
                    raise
                await schedules.create(*args)  # deleted behind the API's back: bring it back
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT:
            raise invalid(("cron",), f"Temporal refused the schedule: {err.message}", "invalid_cron") from err
        raise


async def forget_schedule(temporal: Client, row: TaskDefinition) -> None:
    """Delete the definition's schedule from Temporal; one already gone is fine."""
    try:
        await schedules.handle(temporal, row.id).delete()
    except RPCError as err:
        if err.status != RPCStatusCode.NOT_FOUND:
            raise
