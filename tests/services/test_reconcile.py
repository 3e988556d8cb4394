"""Reconciliation against the real dev server and the real mirror (SQLite, and PostgreSQL when configured):
drift made on purpose is reported exactly, repaired from Temporal, and gone on the next run, through the
library function and through `followthrough reconcile` as a separate process."""

import asyncio
import json
import os
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from followthrough.db.approval_records import APPROVALS, DECISIONS
from followthrough.db.mirror import EVENTS, RUNS, TASKS, insert_created
from followthrough.services.reconcile import MISSING_ROW, ORPHAN_ROW, STATUS_MISMATCH, reconcile
from tests.conftest import TEST_CODEC_ENV, Stack, running_stack
from tests.helpers import task_body, task_input, until_status

ROOT = Path(__file__).resolve().parents[2]


async def _create(stack: Stack, mode: str) -> str:
    response = await stack.http.post("/tasks", json=task_body(tenant_id=stack.tenant, mode=mode))
    assert response.status_code == 201, response.text
    return response.json()["id"]


async def _forget(engine: AsyncEngine, task_id: str) -> None:
    """Delete a task's row and everything that hangs off it, as if the mirror had lost it."""
    async with engine.begin() as conn:
        approvals = select(APPROVALS.c.id).where(APPROVALS.c.task_id == task_id)
        await conn.execute(delete(DECISIONS).where(DECISIONS.c.approval_id.in_(approvals)))
        await conn.execute(delete(APPROVALS).where(APPROVALS.c.task_id == task_id))
        await conn.execute(delete(RUNS).where(RUNS.c.task_id == task_id))
        await conn.execute(delete(EVENTS).where(EVENTS.c.task_id == task_id))
        await conn.execute(delete(TASKS).where(TASKS.c.id == task_id))


async def _set(engine: AsyncEngine, task_id: str, **values: object) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(TASKS).where(TASKS.c.id == task_id).values(**values))


async def _row(engine: AsyncEngine, task_id: str):
    async with engine.connect() as conn:
        return (await conn.execute(select(TASKS).where(TASKS.c.id == task_id))).first()


async def _events(engine: AsyncEngine, task_id: str, kind: str) -> list:
    async with engine.connect() as conn:
        return (await conn.execute(select(EVENTS).where(EVENTS.c.task_id == task_id, EVENTS.c.type == kind))).all()


async def _cli(stack: Stack, *args: str) -> tuple[int, str, str]:
    """`followthrough reconcile` in its own process; the event loop keeps running so the
    in-process worker can answer its state queries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLLOWTHROUGH_")} | {
        "FOLLOWTHROUGH_TEMPORAL_ADDRESS": stack.client.service_client.config.target_host,
        "FOLLOWTHROUGH_TEMPORAL_NAMESPACE": stack.client.namespace,
        "FOLLOWTHROUGH_TASK_QUEUE": stack.settings.task_queue,
        "FOLLOWTHROUGH_DATABASE_URL": stack.engine.url.render_as_string(hide_password=False),
    } | TEST_CODEC_ENV
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "followthrough.cli", "reconcile", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


def _kinds(drift) -> set[tuple[str, str]]:
    return {(d["kind"], d["task_id"]) if isinstance(d, dict) else (d.kind, d.task_id) for d in drift}


async def test_drift_is_reported_repaired_and_gone(dev_env, engine: AsyncEngine, tmp_path: Path):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    async with running_stack(dev_env, engine, tmp_path) as stack:
        done, changed, waiting, lost_done, lost_waiting = (
            await _create(stack, "suggest"), await _create(stack, "suggest"), await _create(stack, "review"),
            await _create(stack, "suggest"), await _create(stack, "review"))
        for task_id in (done, changed, lost_done):
            await until_status(stack, task_id, "completed")
        for task_id in (waiting, lost_waiting):
            await until_status(stack, task_id, "awaiting_approval")
        # The database is shared with other tests (some write rows for workflows on other Temporal servers):
        # this test's tenant and time are its scope, as they could be a deployment's.
        scope = dict(task_queue=stack.settings.task_queue, since=since, tenant=stack.tenant, settle_seconds=0.5)
        cli_scope = ("--since", since.isoformat(), "--tenant", stack.tenant)

        clean = await reconcile(stack.client, engine, **scope)
        assert clean.drift == [] and clean.unverified == [] and clean.workflows == 5

        # Drift on purpose: a finished task reads as still sending, a waiting one as queued, two rows
        # lost with their events, and a row whose workflow never existed.
        await _set(engine, changed, status="in_progress", stage="sending", finished_at=None)
        await _set(engine, waiting, status="pending", stage="queued")
        await _forget(engine, lost_done)
        await _forget(engine, lost_waiting)
        orphan = task_input(mode="review", tenant_id=stack.tenant)
        async with engine.begin() as conn:
            await insert_created(conn, orphan, f"task-orphan-{uuid.uuid4().hex[:12]}")
        expected = {(STATUS_MISMATCH, changed), (STATUS_MISMATCH, waiting), (MISSING_ROW, lost_done),
                    (MISSING_ROW, lost_waiting), (ORPHAN_ROW, orphan.task_id)}

        report = await reconcile(stack.client, engine, **scope)
        assert _kinds(report.drift) == expected
        assert not report.clean
        mismatch = next(d for d in report.drift if d.task_id == changed)
        assert mismatch.mirror["status"] == "in_progress" and mismatch.temporal["status"] == "completed"
        assert "finished_at missing" in mismatch.detail

        # The command line sees the same, as a table and as JSON, and exits 1.
        code, out, err = await _cli(stack, *cli_scope)
        assert code == 1, err
        for kind, task_id in expected:
            assert any(kind in line and task_id in line for line in out.splitlines()), out
        code, out, err = await _cli(stack, *cli_scope, "--json")
        assert code == 1, err
        assert _kinds(json.loads(out)["drift"]) == expected

        # --repair rewrites the mirror from Temporal.
        code, out, err = await _cli(stack, *cli_scope, "--repair", "--json")
        assert code == 0, err
        repaired = json.loads(out)
        assert _kinds(repaired["drift"]) == expected and all(d["repaired"] for d in repaired["drift"])

        for task_id in (changed, lost_done):
            row = await _row(engine, task_id)
            assert (row.status, row.stage) == ("completed", "done")
            assert row.finished_at is not None and row.result["sent"] is False
        for task_id in (waiting, lost_waiting):
            row = await _row(engine, task_id)
            assert (row.status, row.stage) == ("awaiting_approval", "awaiting_approval")
        row = await _row(engine, orphan.task_id)
        assert row.status == "failed" and "does not exist in Temporal" in row.error

        [event] = await _events(engine, changed, "TASK_RECONCILED")
        assert (event.old_status, event.new_status, event.actor_id) == ("in_progress", "completed", "reconcile")
        assert event.data["before"]["status"] == "in_progress" and event.data["after"]["status"] == "completed"
        assert event.data["kind"] == STATUS_MISMATCH
        assert [e.type for e in await _events(engine, lost_done, "TASK_CREATED")] == ["TASK_CREATED"]
        assert len(await _events(engine, lost_done, "TASK_RECONCILED")) == 1

        # Repaired: nothing left, from the library and from the command line.
        again = await reconcile(stack.client, engine, **scope)
        assert again.drift == [] and again.unverified == []
        code, out, err = await _cli(stack, *cli_scope)
        assert code == 0, err + out
        assert "0 drift" in out

        # The re-created waiting task still takes its decision and the mirror follows it.
        response = await stack.http.post(f"/tasks/{lost_waiting}/approve", json={})
        assert response.status_code == 200, response.text
        await until_status(stack, lost_waiting, "completed")
        assert (await reconcile(stack.client, engine, **scope)).drift == []


async def test_repair_without_drift_changes_nothing(dev_env, engine: AsyncEngine, tmp_path: Path):
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    async with running_stack(dev_env, engine, tmp_path) as stack:
        task_id = await _create(stack, "suggest")
        await until_status(stack, task_id, "completed")
        report = await reconcile(stack.client, engine, task_queue=stack.settings.task_queue, since=since,
                                 tenant=stack.tenant, repair=True)
        assert report.drift == [] and report.clean
        assert await _events(engine, task_id, "TASK_RECONCILED") == []


async def test_a_run_started_without_the_codec_is_unverified_not_a_crash(dev_env, engine: AsyncEngine,
                                                                         tmp_path: Path):
    """A run forged past the API in plain JSON (the worker refuses it) has no mirror row; reading its input
    is refused too, so reconcile reports it unverified, never repairs a row from it, and carries on."""
    from temporalio.client import Client, WorkflowFailureError
    from temporalio.converter import default

    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    async with running_stack(dev_env, engine, tmp_path) as stack:
        plain = Client(dev_env.client.service_client, namespace=dev_env.client.namespace, data_converter=default())
        forged = task_input(mode="autonomous", tenant_id=stack.tenant)
        handle = await plain.start_workflow("TaskWorkflow", forged, id=f"task-{forged.task_id}",
                                            task_queue=stack.settings.task_queue)
        try:
            await stack.client.get_workflow_handle(handle.id).result()
        except WorkflowFailureError:
            pass  # refused by the worker
        # The forged input names this test's tenant; rows other tests leave in the shared mirror are out of scope.
        report = await reconcile(stack.client, engine, task_queue=stack.settings.task_queue, since=since,
                                 tenant=stack.tenant, repair=True)
    assert [u["workflow_id"] for u in report.unverified] == [handle.id]
    assert "unencrypted" in report.unverified[0]["reason"]
    assert report.drift == []
    async with engine.connect() as conn:
        assert (await conn.execute(select(TASKS.c.id).where(TASKS.c.id == forged.task_id))).first() is None


async def test_a_forged_run_visibility_still_lists_as_running_is_unverified(dev_env, sqlite_engine: AsyncEngine,
                                                                           tmp_path: Path):
    """Visibility trails the run: a forged run that has already failed can still be listed as running. Its
    state query is then answered by the worker replaying it, which refuses the input: unverified, no crash."""
    import dataclasses

    import pytest
    from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
    from temporalio.converter import default

    from followthrough.services.reconcile import Unverifiable, _truth

    async with running_stack(dev_env, sqlite_engine, tmp_path) as stack:
        plain = Client(dev_env.client.service_client, namespace=dev_env.client.namespace, data_converter=default())
        forged = task_input(mode="autonomous", tenant_id=stack.tenant)
        handle = await plain.start_workflow("TaskWorkflow", forged, id=f"task-{forged.task_id}",
                                            task_queue=stack.settings.task_queue)
        try:
            await stack.client.get_workflow_handle(handle.id).result()
        except WorkflowFailureError:
            pass  # refused by the worker
        described = await stack.client.get_workflow_handle(handle.id).describe()
        assert described.status is WorkflowExecutionStatus.FAILED
        listed_as_running = dataclasses.replace(described, status=WorkflowExecutionStatus.RUNNING)
        with pytest.raises(Unverifiable, match="state query failed"):
            await _truth(stack.client, listed_as_running)
