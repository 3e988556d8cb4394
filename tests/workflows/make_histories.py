"""Record the saved histories that the replay tests load.

Run after a deliberate, released change of workflow behaviour (and only then),
naming a new folder so the earlier behaviours keep being replayed:
    python -m tests.workflows.make_histories v7
A part's name after the folder records only that part's histories (``continued``: runs that continued as new;
``cadence``: cadences, their waits paused, rescheduled and cancelled; ``stopped``: runs an inbound event stopped):
    python -m tests.workflows.make_histories v9 continued
    python -m tests.workflows.make_histories v10 cadence
    python -m tests.workflows.make_histories v11 stopped
"""

import asyncio
import os
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import insert

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from followthrough import worker as worker_module
from followthrough.domain import search_attributes
from followthrough.infra import search_attribute_setup
from followthrough.domain import activity_names, policies
from followthrough.infra.binaries import find_binary
from followthrough.domain.contracts import (
    ApprovalDecision,
    Rejection,
    CancelRequest,
    Completion,
    DecisionAck,
    DefinitionRunInput,
    PauseRequest,
    RescheduleRequest,
    SendRequest,
    SendResult,
    SlaPolicy,
    StopRequest,
    StopResult,
    TaskInput,
    TaskOutcome,
)
from followthrough.db.database import create_engine
from followthrough.db.migrate import upgrade
from followthrough.db.tables import Subscription
from tests.conftest import make_settings
from tests.helpers import add_task_secret, eventually, invoice_payload
from tests.helpers import task_input as plain_task_input
from tests.llm_server import FakeLlm
from tests.receivers import Receiver
from followthrough.worker import build_worker
from followthrough.workflows.patches import KNOWN_LEVEL

HISTORIES = Path(__file__).parent / "histories"
FOLDER = HISTORIES / (sys.argv[1] if len(sys.argv) > 1 else "current")
PART = sys.argv[2] if len(sys.argv) > 2 else None


def task_input(mode: str = "review", **overrides) -> TaskInput:
    """A task at the newest patch level this code knows (followthrough/workflows/patches.py): what runs are
    stamped with once the level is stamped, a release after this one."""
    return plain_task_input(mode, **({"patch_level": KNOWN_LEVEL} | overrides))


# The dev server's suggestion to continue as new comes after this many events (Temporal's default is 4,096).
SUGGEST_AFTER = 100


async def _awaiting(handle: WorkflowHandle) -> None:
    await eventually(lambda: handle.query("state", result_type=DecisionAck),
                     lambda s: s.status == "awaiting_approval")


def _database_away_at_first_send(activities: list) -> list:
    """The activities, with each task's first send meeting a database outage, failed as
    followthrough/activities/delivery.py fails it once its attempts are spent."""
    send = next(fn for fn in activities if activity._Definition.must_from_callable(fn).name == activity_names.SEND)
    failed: set[str] = set()

    @activity.defn(name=activity_names.SEND)
    async def send_after_outage(request: SendRequest) -> SendResult:
        if request.task_id not in failed:
            failed.add(request.task_id)
            raise ApplicationError("the database is unavailable: connection refused",
                                   type=policies.DATABASE_UNAVAILABLE, non_retryable=True)
        return await send(request)

    return [send_after_outage if fn is send else fn for fn in activities]


async def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    engine = create_engine(f"sqlite+aiosqlite:///{tmp / 'mirror.db'}")
    await upgrade(engine)
    if PART == "continued":
        await _continued_runs(tmp, engine)
        await engine.dispose()
        return
    if PART == "cadence":
        await _cadences(tmp, engine)
        await engine.dispose()
        return
    if PART == "stopped":
        await _stopped_runs(tmp, engine)
        await engine.dispose()
        return
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"))
    await search_attribute_setup.register(env.client, env.client.namespace)
    settings = make_settings(str(engine.url), tmp)

    async def run(name: str, task, drive=None) -> None:
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"history-{name}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        if drive:
            await drive(handle)
        await handle.result()
        history = await handle.fetch_history()
        FOLDER.mkdir(parents=True, exist_ok=True)
        (FOLDER / f"{name}.json").write_text(history.to_json())
        print("saved", name)

    async def approve_with_edit(handle: WorkflowHandle) -> None:
        await _awaiting(handle)
        await handle.execute_update("approve", ApprovalDecision(actor_id="alice", body="Edited body"),
                                    result_type=DecisionAck)

    async def cancel(handle: WorkflowHandle) -> None:
        await eventually(lambda: handle.query("state", result_type=DecisionAck), lambda s: s.status == "scheduled")
        await handle.execute_update("cancel", CancelRequest(actor_id="ops"), result_type=DecisionAck)

    async def approve_twice(handle: WorkflowHandle) -> None:
        await _awaiting(handle)
        for who in ("alice", "bob"):
            await handle.execute_update("approve", ApprovalDecision(actor_id=who), result_type=DecisionAck)

    async def complete(handle: WorkflowHandle) -> None:
        await _awaiting(handle)
        await handle.execute_update("complete", Completion(actor_id="dana", result={"called": True}),
                                    result_type=DecisionAck)

    async with build_worker(env.client, settings, engine):
        await run("review_approved_with_edit", task_input("review"), approve_with_edit)
        await run("review_expired", task_input("review"))
        await run("autonomous_completed", task_input("autonomous"))
        await run("suggest_completed", task_input("suggest"))
        await run("assisted_flagged_expired", task_input("assisted", payload=invoice_payload(invoice_amount=99_999)))
        await run("invalid_payload_failed", task_input("autonomous", payload=invoice_payload(customer_email="x")))
        await run("manual_completed", task_input("manual"), complete)
        sla = SlaPolicy(remind_after_seconds=3600, escalate_after_seconds=7200, escalate_to=["boss"],
                        on_deadline="reject")
        await run("sla_reminded_escalated_rejected", task_input("review", approvers=["alice"], sla=sla))
        await run("two_of_two_approved", task_input("review", approvers=["alice", "bob"], approvals_required=2),
                  approve_twice)
        # A subscriber that never answers: the notification is retried, then given up on.
        add_task_secret(settings, "notified", "history_hook", "history-secret")
        async with engine.begin() as conn:
            await conn.execute(insert(Subscription.__table__).values(
                id=str(uuid.uuid4()), tenant_id="notified", url="http://127.0.0.1:9/hook", events=["task.completed"],
                secret="history_hook", description=None, active=True, created_at=datetime.now(timezone.utc)))
        await run("completed_with_unreachable_subscriber", task_input("suggest", tenant_id="notified"))
        await run("second_run_completed", task_input("autonomous", run_number=2))
        due = await env.get_current_time() + timedelta(days=2)
        await run("scheduled_cancelled", task_input("autonomous", due_at=due), cancel)
        await run("scheduled_then_completed", task_input("autonomous", due_at=due + timedelta(days=1)))

        due = await env.get_current_time() + timedelta(days=2)

        async def reschedule_pause_resume(handle: WorkflowHandle) -> None:
            await eventually(lambda: handle.query("state", result_type=DecisionAck),
                             lambda s: s.status == "scheduled")
            await handle.execute_update("reschedule", RescheduleRequest(due_at=due + timedelta(days=3),
                                                                        actor_id="ops"), result_type=DecisionAck)
            await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
            await env.sleep(timedelta(days=4))
            await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)

        await run("scheduled_rescheduled_paused_resumed", task_input("autonomous", due_at=due),
                  reschedule_pause_resume)

        def email(to: str, mode: str = "autonomous", **extra) -> dict:
            return {"type": "email", "mode": mode, "title": f"Mail {to}",
                    "payload": {"to": [to], "subject": "Hello", "body": "Hi"}} | extra

        def group(subtasks: list[dict], execution: str, failure_policy: str):
            return task_input("autonomous", type="group", title="Onboarding", subject_ref_id=None, decompose=True,
                              payload={"subtasks": subtasks, "execution": execution,
                                       "failure_policy": failure_policy})

        # A subtask that waits for an approval nobody gives expires: that is its failure.
        expiring = email("slow@acme.example", "review", approval_timeout_seconds=3600)
        await run("group_parallel_fail_fast_failed",
                  group([email("ada@acme.example"), expiring, email("bob@acme.example", "review")],
                        "parallel", "fail_fast"))
        await run("group_sequential_continue_completed",
                  group([expiring, email("ada@acme.example")], "sequential", "continue"))
        await run("campaign_completed", task_input(
            "autonomous", type="campaign", title="Renewal", subject_ref_id=None, decompose=True,
            payload={"subject": "Renewal, {{ name }}", "body": "Dear {{ name }}", "message_mode": "autonomous",
                     "recipients": [{"to": "ada@acme.example", "variables": {"name": "Ada"}},
                                    {"to": "bob@acme.example", "variables": {"name": "Bob"}}]}))
        # Decided by a holder of a team role the task names.
        async def approve_by_role(handle: WorkflowHandle) -> None:
            await _awaiting(handle)
            await handle.execute_update("approve", ApprovalDecision(actor_id="fiona", actor_roles=["finance"]),
                                        result_type=DecisionAck)

        await run("review_approved_by_role", task_input("review", approver_roles=["finance"]), approve_by_role)
        # A schedule's firing for a definition that no longer exists: skipped.
        definition_run = await env.client.start_workflow(
            "DefinitionRunWorkflow", DefinitionRunInput(definition_id=str(uuid.uuid4())),
            id="history-definition_run_skipped", task_queue=settings.task_queue)
        await definition_run.result()
        FOLDER.mkdir(parents=True, exist_ok=True)
        (FOLDER / "definition_run_skipped.json").write_text((await definition_run.fetch_history()).to_json())
        print("saved definition_run_skipped")

    # A send that failed only because the database was away: a wait, then the send again.
    build_activities = worker_module.build_activities
    worker_module.build_activities = lambda *args, **kwargs: _database_away_at_first_send(
        build_activities(*args, **kwargs))
    async with build_worker(env.client, settings, engine):
        await run("send_waited_out_database_outage", task_input("autonomous"))
    worker_module.build_activities = build_activities

    # Drafting and planning through a language model (the test suite's OpenAI-compatible server).
    os.environ["FOLLOWTHROUGH_SECRET_HISTORY_LLM"] = "sk-history"
    with FakeLlm() as llm:
        settings = make_settings(str(engine.url), tmp, llm_base_url=llm.url, llm_model="history-model",
                                 llm_api_key_secret="history_llm", llm_timeout_seconds=10)
        async with build_worker(env.client, settings, engine):
            async def mark_done(handle: WorkflowHandle) -> None:
                await eventually(lambda: handle.query("state", result_type=DecisionAck),
                                 lambda s: s.stage == "awaiting_person")
                await handle.execute_update("complete", Completion(actor_id="dana", result={"ordered": True}),
                                            result_type=DecisionAck)

            llm.reply({"blocked": "Requires access to the procurement portal"})
            await run("llm_blocked_marked_done", task_input("autonomous"), mark_done)
            llm.draft(confidence=0.95)
            await run("llm_drafted_completed", task_input("autonomous"))
            llm.reply({"subtasks": [{"type": "email", "title": "Note to Ana", "mode": "suggest",
                                     "payload": {"to": ["ana@pilot.example"], "subject": "Q4", "body": "Hi"}}]})
            llm.draft(subject="Q4 for Ana", body="Dear Ana", confidence=0.95)
            await run("project_planned_completed", task_input(
                "autonomous", type="project", title="Q4 notes", subject_ref_id=None, decompose=True,
                payload={"goal": "Tell Ana about Q4", "allowed_types": ["email"]}))

            # Agent tasks: tool calls run, refused, approved and rejected, then an answer; and one cut off at
            # max_turns.
            async def approve_then_reject(handle: WorkflowHandle) -> None:
                await _awaiting(handle)
                await handle.execute_update("approve", ApprovalDecision(actor_id="alice"), result_type=DecisionAck)
                await _awaiting(handle)
                await handle.execute_update("reject", Rejection(actor_id="alice", reason="no deletes"),
                                            result_type=DecisionAck)

            with Receiver() as receiver:
                orders = f"{receiver.url}/orders/7"
                llm.call_tools(("http_request", {"url": orders}), ("run_shell", {"cmd": "ls"}))
                llm.call_tools(("http_request", {"method": "POST", "url": f"{orders}/notes", "json": {"n": 1}}),
                               ("draft_email", {"to": ["ana@pilot.example"], "subject": "Q4", "body": "Hi"}))
                llm.call_tools(("http_request", {"method": "DELETE", "url": orders}))
                llm.answer("Order 7 has shipped.")
                await run("agent_answered_after_approval_and_rejection", task_input(
                    "autonomous", type="agent", title="Order 7", subject_ref_id=None, approvers=["alice"],
                    payload={"prompt": "Has order 7 shipped?", "allowed_tools": ["http_request", "draft_email"],
                             "max_turns": 5}), approve_then_reject)
                llm.call_tools(("http_request", {"url": orders}))
                await run("agent_stopped_at_max_turns", task_input(
                    "autonomous", type="agent", title="Order 7", subject_ref_id=None,
                    payload={"prompt": "Has order 7 shipped?", "allowed_tools": ["http_request"], "max_turns": 1}))
    await env.shutdown()
    await _cancelled_before_start(settings, engine)
    await engine.dispose()


async def _cancelled_before_start(settings, engine) -> None:
    """A cancel sent before any worker polled, so the first workflow task carries it with the start: on the
    dev server, whose updates wait for a worker as a cluster's do."""
    from tests.workflows.test_early_decisions import admitted

    env = await WorkflowEnvironment.start_local(dev_server_existing_path=find_binary("temporal"),
                                                search_attributes=search_attributes.ALL)
    handle = await env.client.start_workflow("TaskWorkflow", task_input("review"), id="history-cancelled_before_start",
                                             task_queue=settings.task_queue, result_type=TaskOutcome)
    sent = asyncio.create_task(handle.execute_update("cancel", CancelRequest(actor_id="ops"), id="early",
                                                     result_type=DecisionAck))
    await eventually(lambda: admitted(env.client, handle.id, "early"), bool)
    async with build_worker(env.client, settings, engine):
        await sent
        await handle.result()
    FOLDER.mkdir(parents=True, exist_ok=True)
    (FOLDER / "cancelled_before_start.json").write_text((await handle.fetch_history()).to_json())
    print("saved cancelled_before_start")
    await env.shutdown()


async def _stopped_runs(tmp: Path, engine) -> None:
    """Runs an inbound event stopped (the ``stop`` update, and TaskInput.stopped_by): in the due wait, in the
    approval wait, and at the start of a task created after its event; and one the event found sending."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"))
    await search_attribute_setup.register(env.client, env.client.namespace)
    settings = make_settings(str(engine.url), tmp)
    FOLDER.mkdir(parents=True, exist_ok=True)

    async def run(name: str, task, status: str | None) -> None:
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"history-{name}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        if status is not None:
            await eventually(lambda: handle.query("state", result_type=DecisionAck), lambda s: s.status == status)
            result = await handle.execute_update("stop", StopRequest(event_id="evt-1", event_type="invoice.paid"),
                                                 result_type=StopResult)
            assert result.outcome == "stopped", result
        assert (await handle.result()).status == "cancelled"
        (FOLDER / f"{name}.json").write_text((await handle.fetch_history()).to_json())
        print("saved", name)

    stop_on = {"subject_ref_type": "INVOICE", "stop_on": ["invoice.paid"]}
    async with build_worker(env.client, settings, engine):
        due = await env.get_current_time() + timedelta(days=3)
        await run("stopped_while_scheduled", task_input("autonomous", due_at=due, **stop_on), "scheduled")
        await run("stopped_awaiting_approval", task_input("review", **stop_on), "awaiting_approval")
        await run("stopped_at_start", task_input("autonomous", stopped_by=StopRequest(
            event_id="evt-0", event_type="invoice.paid", source="api"), **stop_on), None)
    await env.shutdown()


async def _save_runs(env: WorkflowEnvironment, handle: WorkflowHandle, name: str) -> None:
    """Each run of a workflow that continued as new: ``NAME_run1.json``, ``NAME_run2.json``, …"""
    runs: list[str] = []
    async for execution in env.client.list_workflows(f"WorkflowId = '{handle.id}'"):
        runs.append(execution.run_id)
    FOLDER.mkdir(parents=True, exist_ok=True)
    chain = []
    for run_id in runs:
        history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        chain.append((history.events[0].event_time.ToDatetime(), history))
    for number, (_, history) in enumerate(sorted(chain, key=lambda c: c[0]), 1):
        (FOLDER / f"{name}_run{number}.json").write_text(history.to_json())
    print("saved", name, len(chain), "runs")


async def _continued_runs(tmp: Path, engine) -> None:
    """Runs that continued as new while waiting, each run of the chain saved: on a dev server that suggests the
    handover after SUGGEST_AFTER events, so a few dozen decisions cross it."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=find_binary("temporal"), search_attributes=search_attributes.ALL,
        dev_server_extra_args=["--dynamic-config-value", f"limit.historyCount.suggestContinueAsNew={SUGGEST_AFTER}"])

    async def runs(handle: WorkflowHandle) -> int:
        return len([e async for e in env.client.list_workflows(f"WorkflowId = '{handle.id}'")])

    async def state(handle: WorkflowHandle) -> DecisionAck:
        return await handle.query("state", result_type=DecisionAck)

    async def signal_until_handover(handle: WorkflowHandle) -> None:
        for _ in range(SUGGEST_AFTER):
            if await runs(handle) > 1:
                return
            await handle.signal("approve", ApprovalDecision(actor_id="mallory"))
        raise AssertionError("no continue-as-new")

    async def start(name: str, task) -> WorkflowHandle:
        started = await env.client.start_workflow("TaskWorkflow", task, id=f"history-{name}",
                                                  task_queue=settings.task_queue, result_type=TaskOutcome)
        # Not bound to the first run: decisions and queries reach whichever run is current.
        return env.client.get_workflow_handle(started.id, result_type=TaskOutcome)

    os.environ["FOLLOWTHROUGH_SECRET_HISTORY_LLM"] = "sk-history"
    with FakeLlm() as llm, Receiver() as receiver:
        settings = make_settings(str(engine.url), tmp, llm_base_url=llm.url, llm_model="history-model",
                                 llm_api_key_secret="history_llm", llm_timeout_seconds=10)
        async with build_worker(env.client, settings, engine):
            # Due in two days, paused, resumed and rescheduled until the run hands over; then due at once.
            handle = await start("continued_while_scheduled", task_input(
                "review", due_at=datetime.now(timezone.utc) + timedelta(days=2)))
            await eventually(lambda: state(handle), lambda s: s.status == "scheduled")
            cycle = 0
            while await runs(handle) < 2:
                for update in ("pause", "resume"):
                    await handle.execute_update(update, PauseRequest(actor_id="ops"), result_type=DecisionAck)
                await handle.execute_update("reschedule", RescheduleRequest(
                    due_at=datetime.now(timezone.utc) + timedelta(days=2, hours=cycle), actor_id="ops"),
                    result_type=DecisionAck)
                cycle += 1
            await handle.execute_update("reschedule", RescheduleRequest(
                due_at=datetime.now(timezone.utc) - timedelta(seconds=1), actor_id="ops"), result_type=DecisionAck)
            await _awaiting(handle)
            await handle.execute_update("approve", ApprovalDecision(actor_id="alice"), result_type=DecisionAck)
            await handle.result()
            await _save_runs(env, handle, "continued_while_scheduled")

            # A draft waiting for two approvals, one given before the handover, one after.
            handle = await start("continued_awaiting_approvals", task_input(
                "review", approvers=["alice", "bob"], approvals_required=2))
            await _awaiting(handle)
            await handle.execute_update("approve", ApprovalDecision(actor_id="alice"), result_type=DecisionAck)
            await signal_until_handover(handle)
            await handle.execute_update("approve", ApprovalDecision(actor_id="bob"), result_type=DecisionAck)
            await handle.result()
            await _save_runs(env, handle, "continued_awaiting_approvals")

            # An agent whose risky call waits for alice across the handover, then the turn's next call runs.
            receiver.answer(200, '{"status": "shipped"}')
            receiver.answer(201, '{"note": "n-1"}')
            receiver.answer(200, '{"history": []}')
            orders = f"{receiver.url}/orders/7"
            llm.call_tools(("http_request", {"url": orders}),
                           ("http_request", {"method": "POST", "url": f"{orders}/notes", "json": {"n": 1}}),
                           ("http_request", {"url": f"{orders}/history"}))
            llm.answer("Order 7 has shipped.")
            handle = await start("agent_continued_awaiting_tool_approval", task_input(
                "autonomous", type="agent", title="Order 7", subject_ref_id=None, approvers=["alice"],
                payload={"prompt": "Has order 7 shipped?", "allowed_tools": ["http_request"], "max_turns": 3}))
            await _awaiting(handle)
            await signal_until_handover(handle)
            await handle.execute_update("approve", ApprovalDecision(actor_id="alice"), result_type=DecisionAck)
            await handle.result()
            await _save_runs(env, handle, "agent_continued_awaiting_tool_approval")

            # An agent paused between turns across the handover, then resumed.
            receiver.answer(200, '{"status": "shipped"}', delay=2.0)
            llm.call_tools(("http_request", {"url": orders}))
            llm.answer("Order 7 has shipped.")
            handle = await start("agent_continued_paused_between_turns", task_input(
                "autonomous", type="agent", title="Order 7", subject_ref_id=None,
                payload={"prompt": "Has order 7 shipped?", "allowed_tools": ["http_request"], "max_turns": 3}))
            await eventually(lambda: _received(receiver), lambda n: n >= 4)
            await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
            await asyncio.sleep(3)  # the call ends; the loop holds before its next turn
            await signal_until_handover(handle)
            await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)
            await handle.result()
            await _save_runs(env, handle, "agent_continued_paused_between_turns")
    await env.shutdown()


async def _cadences(tmp: Path, engine) -> None:
    """Cadences on the time-skipping server: three steps with two waits (one in business hours) run to the end;
    a wait paused, rescheduled and resumed; a cancel during the second wait."""
    from followthrough.tasktypes import get_type

    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=find_binary("temporal-test-server"))
    await search_attribute_setup.register(env.client, env.client.namespace)
    settings = make_settings(str(engine.url), tmp)

    def email(to: str, wait: dict | None = None) -> dict:
        return {"type": "email", "mode": "autonomous", "title": f"Mail {to}",
                "payload": {"to": [to], "subject": "Invoice INV-123", "body": "Please pay"}} | (
                    {"wait": wait} if wait else {})

    def cadence(*steps: dict):
        payload = get_type("cadence").payload_model.model_validate({"steps": list(steps)}).model_dump(mode="json")
        return task_input("autonomous", type="cadence", title="Dunning INV-123", subject_ref_id=None,
                          decompose=True, payload=payload)

    async def waiting(handle: WorkflowHandle) -> None:
        await eventually(lambda: handle.query("state", result_type=DecisionAck),
                         lambda s: (s.status, s.stage) == ("scheduled", "waiting"))

    async def run(name: str, task, drive=None) -> None:
        handle = await env.client.start_workflow("TaskWorkflow", task, id=f"history-{name}",
                                                 task_queue=settings.task_queue, result_type=TaskOutcome)
        if drive:
            await drive(handle)
        await handle.result()
        FOLDER.mkdir(parents=True, exist_ok=True)
        (FOLDER / f"{name}.json").write_text((await handle.fetch_history()).to_json())
        print("saved", name)

    async def pause_reschedule_resume(handle: WorkflowHandle) -> None:
        await waiting(handle)
        await handle.execute_update("pause", PauseRequest(actor_id="ops"), result_type=DecisionAck)
        await handle.execute_update("reschedule", RescheduleRequest(
            due_at=await env.get_current_time() + timedelta(hours=1), actor_id="ops"), result_type=DecisionAck)
        await env.sleep(timedelta(hours=2))
        await handle.execute_update("resume", PauseRequest(actor_id="ops"), result_type=DecisionAck)

    async def cancel_in_second_wait(handle: WorkflowHandle) -> None:
        await waiting(handle)
        await handle.execute_update("reschedule", RescheduleRequest(
            due_at=await env.get_current_time() - timedelta(seconds=1), actor_id="ops"), result_type=DecisionAck)
        await eventually(lambda: handle.query("state", result_type=DecisionAck),
                         lambda s: s.stage == "waiting_on_subtasks")
        await waiting(handle)
        await handle.execute_update("cancel", CancelRequest(actor_id="ops", reason="invoice paid"),
                                    result_type=DecisionAck)

    hours = {"timezone": "Europe/Berlin", "days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00",
             "end": "17:00"}
    async with build_worker(env.client, settings, engine):
        await run("cadence_completed", cadence(email("ada@acme.example"), email("ada@acme.example", {"for": "P3D"}),
                                               email("calls@acme.example", {"for": "PT1H", "business_hours": hours})))
        await run("cadence_paused_rescheduled_resumed",
                  cadence(email("ada@acme.example"), email("ada@acme.example", {"for": "P1D"})),
                  pause_reschedule_resume)
        await run("cadence_cancelled_in_second_wait",
                  cadence(email("ada@acme.example"), email("ada@acme.example", {"for": "P3D"}),
                          email("calls@acme.example", {"for": "P3D"})), cancel_in_second_wait)
    await env.shutdown()


async def _received(receiver: Receiver) -> int:
    return len(receiver.requests)


if __name__ == "__main__":
    asyncio.run(main())
