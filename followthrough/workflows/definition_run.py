"""DefinitionRunWorkflow: what a task definition's Temporal Schedule starts at each firing.

One activity renders the definition as it is now and creates its task; the
firing's workflow id (the schedule's action id with the firing time appended)
keys the creation, so a retried activity finds the task it already made.
"""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from followthrough.domain import activity_names, policies
    from followthrough.domain.contracts import DefinitionRunInput, DefinitionRunResult, ScheduledRun


@workflow.defn(name="DefinitionRunWorkflow")
class DefinitionRunWorkflow:
    @workflow.run
    async def run(self, request: DefinitionRunInput) -> DefinitionRunResult:
        return await workflow.execute_activity(
            activity_names.RUN_DEFINITION,
            ScheduledRun(definition_id=request.definition_id, schedule_run_id=workflow.info().workflow_id),
            result_type=DefinitionRunResult,
            start_to_close_timeout=policies.DEFINITION_RUN_TIMEOUT,
            retry_policy=policies.DEFINITION_RUN_RETRY,
        )
