"""Patch levels (followthrough/workflows/patches.py): a run stamped with a level takes every patch of it as given,
so its history holds no patch marker and no TemporalChangeVersion upsert, while its own search attributes stay
current; a run at level 0 (by hand, recorded before levels existed, or stamped while the level is only known)
still records each marker; runs are stamped with the configured level, by default one a release behind the
newest known; and a worker handed a level it does not know fails the workflow task, not the workflow."""

from collections import Counter

import pytest
from pydantic import ValidationError

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributeKey

from followthrough.domain import search_attributes
from followthrough.domain.contracts import TaskOutcome
from followthrough.services.task_creation import TaskCreator
from followthrough.services.requests import TaskCreate
from followthrough.worker import build_worker
from followthrough.config.settings import Settings
from followthrough.workflows.patches import GIVEN, KNOWN_LEVEL, STAMPED_LEVEL, patched
from tests.helpers import eventually
from tests.helpers import task_body, task_input

CHANGE_VERSION = SearchAttributeKey.for_keyword_list("TemporalChangeVersion")


async def history_of(handle: WorkflowHandle) -> tuple[Counter, list[set[str]]]:
    """The run's event types counted, and the attribute names each upsert wrote."""
    history = await handle.fetch_history()
    kinds = Counter(EventType.Name(event.event_type) for event in history.events)
    upserts = [set(event.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields)
               for event in history.events
               if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES]
    return kinds, upserts


async def run_to_end(env, settings, sqlite_engine, task) -> WorkflowHandle:
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        assert (await handle.result()).status == "completed"
    return handle


async def test_a_run_at_the_current_level_records_no_patch_markers(time_skipping_env, settings, sqlite_engine):
    handle = await run_to_end(time_skipping_env, settings, sqlite_engine,
                              task_input("autonomous", patch_level=KNOWN_LEVEL))
    kinds, upserts = await history_of(handle)
    assert kinds["EVENT_TYPE_MARKER_RECORDED"] == 3  # the mirror pump's, drafting's and sending's side effects
    assert upserts and all("TemporalChangeVersion" not in names for names in upserts), upserts
    described = await handle.describe()
    assert described.typed_search_attributes.get(search_attributes.TASK_STATUS) == "completed"
    assert described.typed_search_attributes.get(CHANGE_VERSION) is None


async def test_a_run_without_a_level_still_records_each_patch_it_meets(time_skipping_env, settings, sqlite_engine):
    handle = await run_to_end(time_skipping_env, settings, sqlite_engine, task_input("autonomous"))
    kinds, upserts = await history_of(handle)
    described = await handle.describe()
    versions = described.typed_search_attributes.get(CHANGE_VERSION) or []
    # The patches an autonomous run meets at its start: its search attributes and its continuing as new.
    assert {"search-attributes", "continue-as-new-while-waiting"} <= set(versions), versions
    assert kinds["EVENT_TYPE_MARKER_RECORDED"] == 3 + len(versions)
    assert described.typed_search_attributes.get(search_attributes.TASK_STATUS) == "completed"


def test_runs_are_stamped_with_the_configured_level(settings, sqlite_engine, monkeypatch):
    body = TaskCreate.model_validate(task_body(tenant_id="wf-tests"))
    creator = TaskCreator(settings, None, sqlite_engine)  # type: ignore[arg-type] # build() asks nothing of Temporal
    assert settings.workflow_patch_level == STAMPED_LEVEL == 0  # level 1 is known in this release, stamped in the next
    assert creator.build(body, "tester").patch_level == 0
    raised = settings.model_copy(update={"workflow_patch_level": KNOWN_LEVEL})
    assert TaskCreator(raised, None, sqlite_engine).build(body, "tester").patch_level == KNOWN_LEVEL  # type: ignore[arg-type]
    # Every patch of the level is taken without asking, outside a workflow too (workflow.patched would raise).
    assert all(patched(KNOWN_LEVEL, patch_id) for patch_id in GIVEN[KNOWN_LEVEL])
    # A level no worker of this code knows cannot be configured.
    monkeypatch.setenv("FOLLOWTHROUGH_WORKFLOW_PATCH_LEVEL", str(KNOWN_LEVEL + 1))
    with pytest.raises(ValidationError, match="WORKFLOW_PATCH_LEVEL"):
        Settings()
    # A level is the code's and the operator's, never the submitter's.
    with pytest.raises(ValidationError, match="patch_level"):
        TaskCreate.model_validate(task_body(tenant_id="wf-tests") | {"patch_level": KNOWN_LEVEL})


# The SDK drops the run's coroutine when its __init__ fails the workflow task, and says so.
@pytest.mark.filterwarnings("ignore:coroutine .*run_workflow.* was never awaited:RuntimeWarning")
async def test_a_run_at_a_level_this_worker_does_not_know_waits_for_one_that_does(dev_env, settings, sqlite_engine):
    # The dev server: on the shared time-skipping one, the tests after this one (waits of hours) did not end.
    env = dev_env
    task = task_input("autonomous", patch_level=KNOWN_LEVEL + 1)
    async with build_worker(env.client, settings, sqlite_engine):
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"task-{task.task_id}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        failed = await eventually(lambda: history_of(handle),
                                  lambda seen: seen[0]["EVENT_TYPE_WORKFLOW_TASK_FAILED"] >= 1)
        assert failed[0]["EVENT_TYPE_ACTIVITY_TASK_SCHEDULED"] == 0  # nothing was done on a guess
        status = (await handle.describe()).status
        assert status is not None and status.name == "RUNNING"
        await handle.terminate("test over")
