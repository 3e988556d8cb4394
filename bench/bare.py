"""The bare Temporal baselines: workflows with a task's shape doing trivial work.

BareWorkflow runs the same two activities as a task (draft, send) and nothing
else. BareLocalWorkflow also runs the three local activities an autonomous
task uses for its mirror writes, as no-ops: the same number of activities as
the engine's workflow, with none of their work. BareApprovalWorkflow drafts, waits
for an ``approve`` update as a review task does, then sends; it returns the
workflow time at which the send completed, the moment the engine records as its
TASK_EXECUTION_COMPLETED event's ``occurred_at``. BareWaitWorkflow drafts, marks
itself awaiting approval and waits for an ``approve`` signal: the baseline for
many tasks waiting at once (bench/scale.py).

Run as a worker process: python bench/bare.py ADDRESS TASK_QUEUE
"""

import asyncio
import os
import sys
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair, TypedSearchAttributes
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


@workflow.defn(name="BareWaitWorkflow")
class BareWaitWorkflow:
    def __init__(self) -> None:
        self.approved = False

    @workflow.signal
    def approve(self) -> None:
        self.approved = True

    @workflow.run
    async def run(self, payload: dict) -> str:
        draft = await workflow.execute_activity("bare_draft", payload, result_type=dict,
                                                start_to_close_timeout=timedelta(seconds=60),
                                                retry_policy=RetryPolicy(maximum_attempts=5))
        workflow.upsert_search_attributes(TypedSearchAttributes(
            [SearchAttributePair(SearchAttributeKey.for_keyword("TaskStatus"), "awaiting_approval")]))
        await workflow.wait_condition(lambda: self.approved, timeout=timedelta(days=1))
        return draft["subject"]


async def main(address: str, task_queue: str) -> None:
    client = await Client.connect(address)
    async with Worker(client, task_queue=task_queue,
                      workflows=[BareWorkflow, BareLocalWorkflow, BareApprovalWorkflow, BareWaitWorkflow],
                      activities=[bare_draft, bare_send, bare_record], max_concurrent_activities=200,
                      max_cached_workflows=int(os.environ.get("BARE_MAX_CACHED_WORKFLOWS", "1000"))):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
