"""The bare Temporal baselines: workflows with a task's shape doing trivial work.

BareWorkflow runs the same two activities as a task (draft, send) and nothing
else. BareLocalWorkflow also runs the three local activities an autonomous
task uses for its mirror writes, as no-ops: the same number of activities as
the engine's workflow, with none of their work. BareApprovalWorkflow drafts, waits
for an ``approve`` update as a review task does, then sends; it returns the
workflow time at which the send completed, the moment the engine records as its
TASK_EXECUTION_COMPLETED event's ``occurred_at``.

Run as a worker process: python bench/bare.py ADDRESS TASK_QUEUE
"""

import asyncio
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker


@activity.defn(name="bare_draft")
async def bare_draft(payload: dict) -> dict:
    return {"subject": f"Reminder: invoice {payload.get('invoice_number')}", "body": "..."}


@activity.defn(name="bare_send")
async def bare_send(draft: dict) -> str:
    return "sent"


@activity.defn(name="bare_record")
async def bare_record(events: list) -> int:
    return len(events)


@workflow.defn(name="BareWorkflow")
class BareWorkflow:
    @workflow.run
    async def run(self, payload: dict) -> str:
        retry = RetryPolicy(maximum_attempts=5)
        draft = await workflow.execute_activity("bare_draft", payload, result_type=dict,
                                                start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
        return await workflow.execute_activity("bare_send", draft, result_type=str,
                                               start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)


@workflow.defn(name="BareLocalWorkflow")
class BareLocalWorkflow:
    @workflow.run
    async def run(self, payload: dict) -> str:
        retry = RetryPolicy(maximum_attempts=5)

        async def record(n: int) -> None:
            await workflow.execute_local_activity("bare_record", [{}] * n, result_type=int,
                                                  start_to_close_timeout=timedelta(seconds=15), retry_policy=retry)

        await record(1)
        draft = await workflow.execute_activity("bare_draft", payload, result_type=dict,
                                                start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
        await record(2)
        sent = await workflow.execute_activity("bare_send", draft, result_type=str,
                                               start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
        await record(1)
        return sent


@workflow.defn(name="BareApprovalWorkflow")
class BareApprovalWorkflow:
    def __init__(self) -> None:
        self._approved = False
        self._drafted = False

    @workflow.run
    async def run(self, payload: dict) -> str:
        retry = RetryPolicy(maximum_attempts=5)
        draft = await workflow.execute_activity("bare_draft", payload, result_type=dict,
                                                start_to_close_timeout=timedelta(seconds=60), retry_policy=retry)
        self._drafted = True
        await workflow.wait_condition(lambda: self._approved)
        await workflow.execute_activity("bare_send", draft, result_type=str,
                                        start_to_close_timeout=timedelta(seconds=30), retry_policy=retry)
        return workflow.now().isoformat()

    @workflow.query
    def drafted(self) -> bool:
        return self._drafted

    @workflow.update
    async def approve(self) -> str:
        self._approved = True
        return "approved"


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async with Worker(client, task_queue=task_queue, workflows=[BareWorkflow, BareLocalWorkflow, BareApprovalWorkflow],
                      activities=[bare_draft, bare_send, bare_record], max_concurrent_activities=200):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
