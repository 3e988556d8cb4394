"""Running a task definition when its schedule fires: render it as it is now and create its task
through the same path as ``POST /tasks``."""

import logging

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from followthrough.domain import activity_names
from followthrough.domain.contracts import DefinitionRunResult, ScheduledRun
from followthrough.domain.policies import INVALID_PAYLOAD
from followthrough.services.definitions import DefinitionRunner
from followthrough.services.errors import Invalid
from followthrough.config.settings import Settings

log = logging.getLogger("followthrough.definitions")


class DefinitionActivities:
    def __init__(self, settings: Settings, engine: AsyncEngine, temporal: Client) -> None:
        self._runner = DefinitionRunner(settings, temporal, engine)

    @activity.defn(name=activity_names.RUN_DEFINITION)
    async def run(self, request: ScheduledRun) -> DefinitionRunResult:
        try:
            result = await self._runner.run_scheduled(request.definition_id, request.schedule_run_id)
        except Invalid as err:
            if err.errors is None:
                raise
            # The definition no longer renders to a valid task (its templates or its type changed):
            # no retry can fix that; the failed run shows in the schedule's recent actions.
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors)
            raise ApplicationError(f"definition {request.definition_id} does not render to a valid task: {problems}",
                                   type=INVALID_PAYLOAD, non_retryable=True) from None
        log.info("scheduled run %s of definition %s: %s %s", request.schedule_run_id, request.definition_id,
                 result.outcome, result.task_id or result.detail or "")
        return result
