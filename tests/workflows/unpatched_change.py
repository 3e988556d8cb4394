"""A deliberately broken copy of TaskWorkflow for the determinism guard's own test:
it adds a timer before drafting without ``workflow.patched``."""

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from followthrough.domain.contracts import TaskInput, TaskOutcome
    from followthrough.workflows.task import TaskWorkflow


@workflow.defn(name="TaskWorkflow")
class UnpatchedChange(TaskWorkflow):
    @workflow.run
    async def run(self, task: TaskInput) -> TaskOutcome:
        await workflow.sleep(1)
        return await super().run(task)
