"""Patch levels (followthrough/workflows/patches.py): a run the API starts takes every patch of its level as given,
so its history holds no patch marker and no TemporalChangeVersion upsert, while its own search attributes stay
current; a run started without a level (by hand, or recorded before levels existed) still records each marker."""

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
from followthrough.workflows.patches import GIVEN, PATCH_LEVEL, patched
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
                              task_input("autonomous", patch_level=PATCH_LEVEL))
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


def test_the_api_stamps_its_level_on_the_runs_it_starts(settings, sqlite_engine):
    creator = TaskCreator(settings, None, sqlite_engine)  # type: ignore[arg-type] # build() asks nothing of Temporal
    task = creator.build(TaskCreate.model_validate(task_body(tenant_id="wf-tests")), "tester")
    assert task.patch_level == PATCH_LEVEL >= 1
    # Every patch of the level is taken without asking, outside a workflow too (workflow.patched would raise).
    assert all(patched(PATCH_LEVEL, patch_id) for patch_id in GIVEN[PATCH_LEVEL])
    # A level is the code's, never the submitter's.
    with pytest.raises(ValidationError, match="patch_level"):
        TaskCreate.model_validate(task_body(tenant_id="wf-tests") | {"patch_level": PATCH_LEVEL})
