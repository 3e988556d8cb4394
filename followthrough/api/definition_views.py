"""Turning definition rows and schedule descriptions into API responses."""

from temporalio.client import ScheduleActionExecutionStartWorkflow, ScheduleDescription

from followthrough.api.definition_schemas import DefinitionLinks, DefinitionPublic, ScheduledRunPublic, SchedulePublic
from followthrough.services.schedules import schedule_id_for
from followthrough.services.definitions import used_variables
from followthrough.services.results import API_PREFIX
from followthrough.config.settings import Settings
from followthrough.db.tables import TaskDefinition


def definition_links(settings: Settings, definition_id: str) -> DefinitionLinks:
    base = f"{settings.effective_public_url}{API_PREFIX}/definitions/{definition_id}"
    return DefinitionLinks(self=base, run=f"{base}/run", runs=f"{base}/runs")


def schedule_ui_link(settings: Settings, definition_id: str) -> str:
    return (f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{settings.temporal_namespace}"
            f"/schedules/{schedule_id_for(definition_id)}")


def schedule_public(settings: Settings, row: TaskDefinition,
                    description: ScheduleDescription | None = None) -> SchedulePublic | None:
    """The schedule as the mirror knows it, with Temporal's description when there is one."""
    if row.cron is None:
        return None
    public = SchedulePublic(id=schedule_id_for(row.id), cron=row.cron, timezone=row.timezone,
                            state=row.schedule_state, paused=row.schedule_state == "paused",
                            temporal_ui=schedule_ui_link(settings, row.id))
    if description is None:
        return public
    state = description.schedule.state
    info = description.info
    recent = [ScheduledRunPublic(scheduled_at=a.scheduled_at, started_at=a.started_at,
                                 workflow_id=a.action.workflow_id
                                 if isinstance(a.action, ScheduleActionExecutionStartWorkflow) else None)
              for a in info.recent_actions]
    return public.model_copy(update={
        "paused": state.paused, "state": "paused" if state.paused else "active", "note": state.note or None,
        "next_run_times": list(info.next_action_times), "recent_runs": recent, "runs_started": info.num_actions})


def definition_public(settings: Settings, row: TaskDefinition,
                      description: ScheduleDescription | None = None) -> DefinitionPublic:
    used = used_variables(row)
    return DefinitionPublic(
        id=row.id, tenant_id=row.tenant_id, name=row.name, description=row.description, type=row.type,
        mode=row.mode, title=row.title, payload=row.payload, variables=row.variables, variables_used=used,
        variables_required=[v for v in used if v not in row.variables], tags=row.tags, defaults=row.defaults,
        trigger={"event": row.trigger_event} if row.trigger_event else None,
        cron=row.cron, timezone=row.timezone, schedule=schedule_public(settings, row, description),
        version=row.version, created_by=row.created_by, created_at=row.created_at, updated_at=row.updated_at,
        links=definition_links(settings, row.id))
