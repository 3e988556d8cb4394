"""TaskWorkflow: wait until due → draft → (approval) → send → done, or split into
subtasks and wait for them.

The mode and the draft's guardrail flags decide whether a person must approve.
Approvals arrive as the ``approve``/``reject`` Updates (validated, so a caller
learns at once that a task cannot take a decision) or as signals of the same
names (for ``temporal workflow signal`` and the Web UI). ``cancel`` works in
every non-terminal state; ``reschedule`` moves the due time of a task still
waiting for it; ``pause`` holds a task before its next step until ``resume``.
"""

import asyncio
from dataclasses import asdict, replace
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.workflow import ActivityCancellationType
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from followthrough.domain import activity_names, policies, search_attributes
    from followthrough.domain.contracts import (
        ApprovalDecision,
        CancelRequest,
        CarriedState,
        Completion,
        DecisionAck,
        Draft,
        DraftRequest,
        DraftResult,
        Failure,
        PauseRequest,
        Rejection,
        RescheduleRequest,
        SendRequest,
        SendResult,
        StopRequest,
        StopResult,
        TaskChanges,
        TaskInput,
        TaskOutcome,
    )
    from followthrough.domain.lifecycle import EventType, Stage, TaskMode, TaskStatus
    from followthrough.workflows import run_texts
    from followthrough.workflows.agent_loop import AgentLoop
    from followthrough.workflows.mirror_pump import MirrorPump
    from followthrough.workflows.patches import (
        CANCEL_BEFORE_START,
        CONTINUE_AS_NEW,
        DEADLINE_HONOURS_HOLDS,
        EARLY_RESCHEDULE_KEPT,
        PAUSABLE_DUE_WAIT,
        PERSON_REPORTS_FAILURE,
        SEND_OUTLASTS_OUTAGE,
        SIGNAL_NEEDS_DECISION,
        STOP_ON_EVENT,
        known_level,
    )
    from followthrough.workflows.task_subtasks import TaskSubtasks
    from followthrough.workflows.task_rules import (
        SENDS_UNATTENDED,
        apply_edits,
        combined,
        deadline_decision,
        decision_data,
        error_type,
        sla_steps,
    )

# Tasks of this type run the agent loop (followthrough/workflows/agent_loop.py); no older run has one.
AGENT = "agent"


@workflow.defn(name="TaskWorkflow")
class TaskWorkflow(AgentLoop, TaskSubtasks):
    @workflow.init
    def __init__(self, task: TaskInput) -> None:
        self._status = TaskStatus.PENDING
        self._stage = Stage.QUEUED
        self._seq = 0
        # Known with the input, before any handler that came with the start runs (and may ask for a patch).
        self._patch_level = known_level(task.patch_level)
        self._decision: ApprovalDecision | Rejection | Completion | Failure | None = None
        # Approvals so far (N of M) and the id of the open approval request.
        self._approvals: list[ApprovalDecision] = []
        self._approval_id: str | None = None
        self._escalated: list[str] = []
        self._cancel: CancelRequest | None = None
        # What the task is waiting for while an inbound event may stop it ("due", "approval", "paused"; any wait
        # that sets it is stoppable), and the event that stopped it.
        self._in_wait: str | None = None
        self._stopped_by: StopRequest | None = None
        self._flow: asyncio.Task | None = None
        self._pump: MirrorPump | None = None
        self._task: TaskInput | None = None
        self._due_at: datetime | None = None
        self._reschedulable = False
        # Set while paused, with the status to go back to on resume.
        self._paused: PauseRequest | None = None
        self._status_before_pause = TaskStatus.PENDING
        self._execution: str | None = None
        self._children_started = False
        self._indexed = False
        self._indexed_status: str | None = None
        self._progress: dict[str, int] | None = None
        self._approval_deadline: datetime | None = None
        # What held the task when its deadline declined to approve it (guardrail flags, a block).
        self._held_at_deadline: list[str] = []
        # Whether this run may continue as new, and how many runs it continues (CarriedState.continued).
        self._may_continue = False
        self._agent_continues = False
        self._continued = 0
        # While a draft waits for a decision: what a continued run needs to go on waiting (CarriedState).
        self._awaiting: dict | None = None
        self._requested_at: datetime | None = None
        self._sla_steps_taken = 0
        # A continued run takes its state over here, before an update or signal that came with its start is
        # validated; its input's own part (without `carried`) is what subtasks, snapshots and retries see.
        self._carried = task.carried
        if task.carried is not None:
            self._task = replace(task, carried=None)
            self._take_over(task.carried)
            self._pump = MirrorPump(self._task)

    # ---- run -------------------------------------------------------------

    @workflow.run
    async def run(self, task: TaskInput) -> TaskOutcome:
        carried = self._carried
        if carried is None:
            self._task, self._pump = task, MirrorPump(task)
        task = self._task
        assert task is not None and self._pump is not None
        self._index_start()
        self._pump.start()
        if carried is not None:
            workflow.set_current_details(self._details())
        self._flow = asyncio.create_task(self._execute(task, carried))
        try:
            outcome = await self._flow
        except asyncio.CancelledError:
            # Cancellation requested through Temporal itself (CLI, Web UI):
            # the flow has been cancelled too; wait for it to record that.
            outcome = await self._flow
        await self._pump.close()
        return outcome

    async def _execute(self, task: TaskInput, carried: CarriedState | None) -> TaskOutcome:
        try:
            if task.stopped_by is not None and self._cancel is None and self._patched(STOP_ON_EVENT):
                self._stop(task.stopped_by)
                raise asyncio.CancelledError()
            if self._cancel is not None and self._patched(CANCEL_BEFORE_START):
                raise asyncio.CancelledError()
            return await self._steps(task, carried)
        except asyncio.CancelledError:
            request = self._cancel or CancelRequest(actor_id="temporal", actor_type="system")
            data: dict = {"reason": request.reason} if request.reason else {}
            if self._stopped_by is not None:
                stopped = self._stopped_by
                data["stopped_by_event"] = {
                    "id": stopped.event_id, "type": stopped.event_type, "source": stopped.source,
                    "received_at": stopped.received_at.isoformat() if stopped.received_at else None}
            if self._approval_id is not None and self._decision is None:
                data["approval_id"] = self._approval_id
            return self._finish(TaskStatus.CANCELLED, EventType.TASK_CANCELLED,
                                actor_type=request.actor_type, actor_id=request.actor_id, data=data)

    async def _steps(self, task: TaskInput, carried: CarriedState | None = None) -> TaskOutcome:
        mode = TaskMode(task.mode)
        now = workflow.now()
        self._may_continue = self._patched(CONTINUE_AS_NEW)
        if carried is not None and carried.agent is not None:
            return await self._run_agent(task, carried)
        if carried is not None and carried.draft is not None:
            assert carried.mode is not None
            return await self._decide_and_send(task, TaskMode(carried.mode), carried.draft, carried.flags,
                                               carried.blocked, carried)
        if carried is not None:
            # A continued run goes on waiting where the last one stopped.
            if carried.due_at is not None:
                # A reschedule that came with this run's start has already moved _due_at from the carried time.
                moved = self._due_at if self._patched(EARLY_RESCHEDULE_KEPT) else None
                await self._wait_until_due(moved or carried.due_at)
        elif task.due_at is not None and task.due_at > now:
            self._emit(EventType.TASK_STATUS_CHANGED, TaskStatus.SCHEDULED, Stage.WAITING_UNTIL_DUE,
                       data={"due_at": task.due_at.isoformat()})
            if self._patched(PAUSABLE_DUE_WAIT):
                await self._wait_until_due(task.due_at)
            else:
                await workflow.sleep(task.due_at - now, summary="Wait until due")

        await self._hold(continuable=True)
        if task.decompose:
            return await self._run_subtasks(task)
        if task.type == AGENT:
            return await self._run_agent(task)
        self._emit(EventType.TASK_STATUS_CHANGED, TaskStatus.IN_PROGRESS, Stage.DRAFTING,
                   changes=TaskChanges(started_at=workflow.now(), workflow_run_id=workflow.info().run_id))
        try:
            drafted = await workflow.execute_activity(
                activity_names.DRAFT, DraftRequest(task=task), result_type=DraftResult,
                start_to_close_timeout=policies.DRAFT_TIMEOUT, retry_policy=policies.DRAFT_RETRY,
                # The draft heartbeats; a cancel stops it (the default cancellation type: the
                # task is cancelled at once and the activity is told with its next heartbeat).
                heartbeat_timeout=policies.DRAFT_HEARTBEAT_TIMEOUT,
                summary=run_texts.draft_summary(task),
            )
        except ActivityError as err:
            return self._fail("draft", err)
        draft = drafted.draft
        # Which drafter wrote it (and, for an LLM, the model, tokens, latency and confidence): event data,
        # not a command, so older histories replay unchanged.
        origin = drafted.origin.as_event_data() if drafted.origin else {}
        blocked = {"blocked": drafted.blocked} if drafted.blocked else {}
        self._emit(EventType.TASK_DRAFTED, data={"flags": drafted.flags} | origin | blocked,
                   changes=TaskChanges(draft=asdict(draft)))
        if drafted.flags:
            self._emit(EventType.TASK_GUARDRAIL_FLAGGED, data={"reasons": drafted.flags})
        await self._hold()
        if drafted.blocked:
            # The drafter found work the engine cannot do: a person does it, as in a manual task.
            mode = TaskMode.MANUAL
            self._index(search_attributes.MODE, mode.value)

        if mode is TaskMode.SUGGEST:
            return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED,
                                result={"draft": asdict(draft), "sent": False})

        return await self._decide_and_send(task, mode, draft, drafted.flags, drafted.blocked)

    async def _decide_and_send(self, task: TaskInput, mode: TaskMode, draft: Draft, flags: list[str],
                               blocked: str | None, resumed: CarriedState | None = None) -> TaskOutcome:
        if resumed is not None or mode is TaskMode.MANUAL or mode not in SENDS_UNATTENDED or flags:
            self._awaiting = {"draft": draft, "flags": flags, "blocked": blocked, "mode": mode.value}
            before, self._in_wait = self._in_wait, "approval"
            try:
                decision = await self._await_decision(task, mode, flags, blocked, resumed=resumed)
            finally:
                self._in_wait = before
            self._awaiting = None
            approval = {"approval_id": self._approval_id}
            if decision is None:
                held = {"held_by": self._held_at_deadline} if self._held_at_deadline else {}
                return self._finish(TaskStatus.EXPIRED, EventType.TASK_EXPIRED,
                                    data={"timeout_seconds": task.approval_timeout_seconds} | approval | held)
            if isinstance(decision, Rejection):
                return self._finish(TaskStatus.REJECTED, EventType.TASK_REJECTED,
                                    actor_type=decision.actor_type, actor_id=decision.actor_id,
                                    data={"reason": decision.reason} | approval)
            if isinstance(decision, Failure):
                return self._finish(TaskStatus.FAILED, EventType.TASK_EXECUTION_FAILED,
                                    actor_type=decision.actor_type, actor_id=decision.actor_id,
                                    data={"step": "person", "error_type": "ReportedFailed",
                                          "message": decision.error} | approval,
                                    result={"failed_by": decision.actor_id, "result": decision.result},
                                    error=decision.error)
            if isinstance(decision, Completion):
                return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED,
                                    actor_type=decision.actor_type, actor_id=decision.actor_id,
                                    data={"comment": decision.comment} | approval,
                                    result={"done_by": decision.actor_id, "comment": decision.comment,
                                            "result": decision.result})
            original, draft = draft, apply_edits(draft, decision)
            self._emit(EventType.TASK_APPROVED, TaskStatus.IN_PROGRESS,
                       Stage.DONE if mode is TaskMode.MANUAL else Stage.SENDING,
                       actor_type=decision.actor_type, actor_id=decision.actor_id,
                       data=decision_data(decision, original) | approval
                       | {"approved_by": [a.actor_id for a in self._approvals]},
                       changes=TaskChanges(draft=asdict(draft)))
            if mode is TaskMode.MANUAL:
                return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED,
                                    actor_type=decision.actor_type, actor_id=decision.actor_id,
                                    result={"done_by": decision.actor_id, "comment": decision.comment})
        return await self._send(task, draft)

    async def _await_decision(self, task: TaskInput, mode: TaskMode, flags: list[str], blocked: str | None = None,
                              reason: str | None = None, resumed: CarriedState | None = None,
                              ) -> ApprovalDecision | Rejection | Completion | Failure | None:
        timeout = timedelta(seconds=task.approval_timeout_seconds)
        stage = Stage.AWAITING_PERSON if mode is TaskMode.MANUAL else Stage.AWAITING_APPROVAL
        if reason is None:
            reason = "manual task" if mode is TaskMode.MANUAL else ("guardrail" if flags else f"{mode.value} mode")
        if blocked:
            reason = f"blocked: {blocked}"
        if resumed is None:
            self._emit(EventType.TASK_APPROVAL_REQUESTED, TaskStatus.AWAITING_APPROVAL, stage,
                       data={"reason": reason, "flags": flags, "timeout_seconds": task.approval_timeout_seconds,
                             "approvers": task.approvers, "required": task.approvals_required}
                       | ({"approver_roles": task.approver_roles} if task.approver_roles else {}),
                       changes=TaskChanges(approval_deadline=workflow.now() + timeout))
            self._approval_id = f"{workflow.info().run_id}:{self._seq}"
            requested, deadline = workflow.now(), workflow.now() + timeout
            self._sla_steps_taken = 0
        else:  # a continued run: the same request, its SLA as far as it had gone
            assert resumed.approval_requested_at is not None and resumed.approval_deadline is not None
            requested, deadline = resumed.approval_requested_at, resumed.approval_deadline
        self._requested_at = requested
        # A wait continues as new when the caller says what a new run needs to go on (a draft's or an agent's).
        continuable = self._awaiting is not None
        # The SLA's steps, each on a durable timer: remind, then escalate, then act at the deadline.
        person = mode is TaskMode.MANUAL
        for index, (step, after) in enumerate(sla_steps(task.sla, timeout)):
            if index < self._sla_steps_taken:
                continue
            wait = requested + after - workflow.now()
            if await self._decided_within(wait, run_texts.approval_wait_summary(wait, step, person=person),
                                          continuable):
                return self._decision
            self._take_sla_step(step, task)
            self._sla_steps_taken += 1
        wait = deadline - workflow.now()
        if await self._decided_within(wait, run_texts.approval_wait_summary(wait, person=person), continuable):
            return self._decision
        decision = deadline_decision(task.sla, mode)
        held = flags + ([f"blocked: {blocked}"] if blocked else [])
        # Whoever set the SLA (a submitter may) cannot turn a guardrail's hold into a send: a held task expires.
        if isinstance(decision, ApprovalDecision) and held and self._patched(DEADLINE_HONOURS_HOLDS):
            self._held_at_deadline = held
            return None
        return decision

    async def _decided_within(self, wait: timedelta, summary: str, continuable: bool = False) -> bool:
        if not continuable:
            try:
                await workflow.wait_condition(lambda: self._decision is not None, timeout=wait,
                                              timeout_summary=summary)
            except asyncio.TimeoutError:
                return False
            return True
        end = workflow.now() + wait
        while self._decision is None:
            if wait <= timedelta(0):  # passed while the run handed over
                return False
            try:
                await workflow.wait_condition(lambda: self._decision is not None or self._continue_suggested(),
                                              timeout=wait, timeout_summary=summary)
            except asyncio.TimeoutError:
                return False
            await self._continue_if_suggested(waiting_until_due=False)
            wait = end - workflow.now()
        return True

    def _take_sla_step(self, step: str, task: TaskInput) -> None:
        assert task.sla is not None
        if step == "escalate":
            self._escalated = [a for a in task.sla.escalate_to if a not in task.approvers]
            self._emit(EventType.TASK_APPROVAL_ESCALATED, actor_id="sla",
                       data={"approval_id": self._approval_id, "escalate_to": self._escalated})
        else:
            self._emit(EventType.TASK_APPROVAL_REMINDED, actor_id="sla",
                       data={"approval_id": self._approval_id, "approvers": self._allowed()})

    async def _send(self, task: TaskInput, draft: Draft) -> TaskOutcome:
        if self._stage is not Stage.SENDING:
            self._emit(EventType.TASK_EXECUTION_STARTED, stage=Stage.SENDING)
        while True:
            try:
                sent = await self._send_once(task, draft)
            except ActivityError as err:
                # Every attempt failed only because the database was away: no failed task, but a wait and
                # another send with fresh attempts and the same key (the receiver sees one delivery).
                if error_type(err) == policies.DATABASE_UNAVAILABLE and self._patched(SEND_OUTLASTS_OUTAGE):
                    await workflow.sleep(policies.DATABASE_WAIT, summary="Wait for the database, then send again")
                    continue
                return self._fail("send", err)
            # What a transport puts in `event_data` (an extraction's object) goes on the completed event too: event
            # data, not a command, so older histories replay unchanged.
            event_data = sent.detail.get("event_data")
            return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED,
                                data=dict(event_data) if isinstance(event_data, dict) else None,
                                result={"delivery": asdict(sent), "sent": True}, attempts=sent.attempt)

    async def _send_once(self, task: TaskInput, draft: Draft) -> SendResult:
        return await workflow.execute_activity(
            activity_names.SEND,
            SendRequest(task_id=task.task_id, task_type=task.type, tenant_id=task.tenant_id,
                        draft=draft, idempotency_key=f"{task.task_id}:send", run_number=task.run_number),
            result_type=SendResult,
            start_to_close_timeout=timedelta(seconds=task.send_timeout_seconds) if task.send_timeout_seconds
            else policies.SEND_TIMEOUT,
            retry_policy=policies.send_retry(task.send_retry),
            heartbeat_timeout=policies.SEND_HEARTBEAT_TIMEOUT,
            # A send that has begun finishes or fails before a cancel takes
            # effect, so a cancelled task never leaves an unknown send behind.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=run_texts.send_summary(task, draft.channel),
        )

    # ---- time: the due wait and pauses ------------------------------------

    async def _wait_until_due(self, due_at: datetime) -> None:
        """A durable timer to the due time, recomputed whenever a reschedule moves it;
        while paused, the task does not start even once the time has come."""
        self._due_at, self._reschedulable = due_at, True
        before, self._in_wait = self._in_wait, "due"
        while True:
            if self._paused is not None:
                await workflow.wait_condition(lambda: self._paused is None or self._continue_suggested())
                await self._continue_if_suggested(waiting_until_due=True)
                continue
            assert self._due_at is not None
            remaining = self._due_at - workflow.now()
            if remaining <= timedelta(0):
                break
            due = self._due_at
            try:
                await workflow.wait_condition(
                    lambda: self._due_at != due or self._paused is not None or self._continue_suggested(),
                    timeout=remaining, timeout_summary=run_texts.due_wait_summary(due))
            except asyncio.TimeoutError:
                pass
            await self._continue_if_suggested(waiting_until_due=True)
        self._reschedulable = False
        self._in_wait = before

    def _details(self) -> str:
        """What the open task is doing or waiting for, for the Web UI (its current details)."""
        assert self._task is not None
        if self._paused is not None:
            return run_texts.paused(self._paused, self._status_before_pause)
        if self._cadence_step is not None:
            return run_texts.cadence(self._cadence_step, self._cadence_steps, self._progress,
                                     self._due_at if self._stage is Stage.WAITING else None)
        if self._status is TaskStatus.SCHEDULED:
            due = self._due_at or self._task.due_at
            return f"Scheduled for {run_texts.when(due)}" if due else "Scheduled"
        if self._status is TaskStatus.AWAITING_APPROVAL:
            return run_texts.awaiting(self._task, self._stage, self._allowed(), len(self._approvals),
                                      self._approval_deadline)
        if self._stage is Stage.WAITING_ON_SUBTASKS and self._progress is not None:
            return run_texts.subtasks(self._progress)
        if self._status is TaskStatus.PENDING:
            return "Queued"
        return run_texts.in_progress(self._task, self._stage)

    async def _hold(self, continuable: bool = False) -> None:
        """Between steps: wait while the task is paused (before its draft, the run may continue as new)."""
        before, self._in_wait = self._in_wait, self._in_wait or "paused"
        try:
            while self._paused is not None:
                await workflow.wait_condition(
                    lambda: self._paused is None or (continuable and self._continue_suggested()))
                if continuable:
                    await self._continue_if_suggested(waiting_until_due=False)
        finally:
            self._in_wait = before

    # ---- continue-as-new: a long wait's history handed to a fresh run ------

    def _continue_suggested(self) -> bool:
        return self._may_continue and workflow.info().is_continue_as_new_suggested()

    async def _continue_if_suggested(self, *, waiting_until_due: bool) -> None:
        """Continue as new once Temporal suggests it (its history nears the limit), with the task's state: the
        same input, with what it has done so far in its ``carried`` field."""
        if not self._continue_suggested():
            return
        pump, task = self._pump, self._task
        assert pump is not None and task is not None
        # Updates and signals under way finish, and every event reaches the mirror, before the handover; a
        # decision arriving after it goes to the new run.
        # A decision taken meanwhile is acted on here instead.
        while not (workflow.all_handlers_finished() and pump.idle()) and self._decision is None:
            await workflow.wait_condition(
                lambda: self._decision is not None or (workflow.all_handlers_finished() and pump.idle()))
        if self._decision is not None:
            return
        waiting = {} if self._awaiting is None else self._awaiting | {
            "approval_id": self._approval_id, "approvals": list(self._approvals), "escalated": list(self._escalated),
            "approval_requested_at": self._requested_at, "approval_deadline": self._approval_deadline,
            "sla_steps_taken": self._sla_steps_taken}
        workflow.continue_as_new(replace(task, carried=CarriedState(
            seq=self._seq, status=self._status.value, stage=self._stage.value,
            due_at=self._due_at if waiting_until_due else None, paused=self._paused,
            status_before_pause=self._status_before_pause.value, continued=self._continued + 1, **waiting)))

    def _take_over(self, carried: CarriedState) -> None:
        self._seq, self._continued = carried.seq, carried.continued
        self._status, self._stage = TaskStatus(carried.status), Stage(carried.stage)
        self._paused, self._status_before_pause = carried.paused, TaskStatus(carried.status_before_pause)
        self._due_at, self._reschedulable = carried.due_at, carried.due_at is not None
        self._approval_id, self._approvals, self._escalated = carried.approval_id, carried.approvals, carried.escalated
        self._approval_deadline, self._sla_steps_taken = carried.approval_deadline, carried.sla_steps_taken

    # ---- updates, signals, queries ----------------------------------------

    @workflow.update(name="approve")
    async def approve(self, decision: ApprovalDecision) -> DecisionAck:
        if not self._record_approval(decision):
            return DecisionAck(status=self._status.value, stage=self._stage.value)
        return await self._settled()

    @approve.validator
    def _check_approve(self, decision: ApprovalDecision) -> None:
        self._require_decidable("approve", decision)
        if any(a.actor_id == decision.actor_id for a in self._approvals):
            raise ApplicationError(f"{decision.actor_id} has already approved this task", type="InvalidTransition")
        if decision.body is not None and not decision.body.strip():
            raise ValueError("an edited body must not be empty")

    @workflow.update(name="reject")
    async def reject(self, rejection: Rejection) -> DecisionAck:
        self._decision = rejection
        return await self._settled()

    @reject.validator
    def _check_reject(self, rejection: Rejection) -> None:
        self._require_decidable("reject", rejection)

    @workflow.update(name="complete")
    async def complete(self, completion: Completion) -> DecisionAck:
        self._decision = completion
        return await self._settled()

    @complete.validator
    def _check_complete(self, completion: Completion) -> None:
        self._require_decidable("complete", completion)
        if self._stage is not Stage.AWAITING_PERSON:
            raise ApplicationError("cannot complete: only a manual task waiting for a person can be marked done",
                                   type="InvalidTransition")

    @workflow.update(name="fail")
    async def fail(self, failure: Failure) -> DecisionAck:
        self._patched(PERSON_REPORTS_FAILURE)
        self._decision = failure
        return await self._settled()

    @fail.validator
    def _check_fail(self, failure: Failure) -> None:
        self._require_decidable("fail", failure)
        if self._stage is not Stage.AWAITING_PERSON:
            raise ApplicationError("cannot fail: only a task waiting for a person (a manual task or a to-do) can "
                                   "be reported failed; this one waits for an approval", type="InvalidTransition")
        if not failure.error.strip():
            raise ValueError("the error must not be empty")

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> DecisionAck:
        self._cancel = request
        if self._flow is not None:
            self._flow.cancel()
        # Otherwise it came before run() began the flow, which sees the request at its start.
        await workflow.wait_condition(lambda: self._status.terminal)
        return DecisionAck(status=self._status.value, stage=self._stage.value)

    @cancel.validator
    def _check_cancel(self, request: CancelRequest) -> None:
        if self._status.terminal:
            raise ApplicationError(f"task is already {self._status.value}", type="InvalidTransition")
        if self._cancel is not None:
            raise ApplicationError("task is already being cancelled", type="InvalidTransition")

    @workflow.update(name="stop")
    async def stop(self, request: StopRequest) -> StopResult:
        """An inbound event the task's stop_on names: it ends cancelled if it is still waiting (for its due time,
        a decision, a resume, or any wait that sets ``_in_wait``); a task doing its work, or ended, is untouched.
        The answer says which. The same event again answers ``stopped`` and records nothing more."""
        if self._stopped_by is not None and self._stopped_by.event_id == request.event_id:
            await workflow.wait_condition(lambda: self._status.terminal)
            return self._stop_result("stopped")
        if self._status.terminal:
            return self._stop_result("already_ended")
        if self._task is not None and request.event_type not in self._task.stop_on:
            return self._stop_result("not_subscribed")
        if self._cancel is not None and self._flow is not None:  # another event or a person is ending it
            await workflow.wait_condition(lambda: self._status.terminal)
            return self._stop_result("already_ended")
        if (self._in_wait is None or self._decision is not None or self._flow is None
                or self._stage is Stage.SENDING):
            return self._stop_result("not_waiting")
        self._patched(STOP_ON_EVENT)
        self._stop(request)
        self._flow.cancel()
        await workflow.wait_condition(lambda: self._status.terminal)
        return self._stop_result("stopped")

    def _stop(self, request: StopRequest) -> None:
        self._stopped_by = request
        self._cancel = CancelRequest(actor_id=f"event:{request.event_id}"[:128], actor_type="system",
                                     reason=f"stopped by event {request.event_type}")

    def _stop_result(self, outcome: str) -> StopResult:
        return StopResult(outcome=outcome, status=self._status.value, stage=self._stage.value)

    @workflow.update(name="reschedule")
    async def reschedule(self, request: RescheduleRequest) -> DecisionAck:
        previous, self._due_at = self._due_at, request.due_at
        data = {"from": previous.isoformat() if previous else None, "to": request.due_at.isoformat(),
                "reason": request.reason}
        if request.run_now:  # only new requests carry it: older histories replay with the data they had
            data["run_now"] = True
        self._emit(EventType.TASK_RESCHEDULED, actor_type=request.actor_type, actor_id=request.actor_id,
                   data=data, changes=TaskChanges(due_at=request.due_at))
        return DecisionAck(status=self._status.value, stage=self._stage.value)

    @reschedule.validator
    def _check_reschedule(self, request: RescheduleRequest) -> None:
        what = "run now" if request.run_now else "reschedule"
        self._require_open(what)
        if self._task is None:  # arrived with the start, before run(): its due wait has not begun
            raise ApplicationError(f"cannot {what}: the task has not started yet; try again",
                                   type="InvalidTransition")
        if not self._reschedulable:
            raise ApplicationError(f"cannot {what}: task is {self._status.value} ({self._stage.value}); "
                                   f"only a task still waiting for its due time can be "
                                   f"{'run now' if request.run_now else 'rescheduled'} (or a cadence during a wait "
                                   "before its next step)",
                                   type="InvalidTransition")
        if request.run_now and self._paused is not None:
            raise ApplicationError("cannot run now: the task is paused; resume it first", type="InvalidTransition")
        if request.run_now and self._due_at is not None and self._due_at <= workflow.now():
            # Already due (a run now taken a moment ago, its wait not yet woken): it starts once, not twice.
            raise ApplicationError("cannot run now: the task is already due and starting", type="InvalidTransition")
        if request.due_at.tzinfo is None:
            raise ValueError("due_at must carry a time zone")

    @workflow.update(name="pause")
    async def pause(self, request: PauseRequest) -> DecisionAck:
        self._paused, self._status_before_pause = request, self._status
        self._emit(EventType.TASK_PAUSED, TaskStatus.PAUSED, actor_type=request.actor_type,
                   actor_id=request.actor_id, data={"reason": request.reason, "stage": self._stage.value})
        return DecisionAck(status=self._status.value, stage=self._stage.value)

    @pause.validator
    def _check_pause(self, request: PauseRequest) -> None:
        self._require_open("pause")
        if self._paused is not None:
            raise ApplicationError("task is already paused", type="InvalidTransition")
        if self._pump is None:
            raise ApplicationError("cannot pause: the task has not started yet; try again", type="InvalidTransition")
        if self._status is TaskStatus.AWAITING_APPROVAL:
            raise ApplicationError("cannot pause: the task is waiting for a decision, which holds it already; "
                                   "approve, reject or cancel it", type="InvalidTransition")
        if self._stage is Stage.SENDING:
            raise ApplicationError("cannot pause: the send has begun and finishes", type="InvalidTransition")
        if self._children_started:
            raise ApplicationError("cannot pause: all its subtasks are running; pause or cancel them",
                                   type="InvalidTransition")

    @workflow.update(name="resume")
    async def resume(self, request: PauseRequest) -> DecisionAck:
        self._paused = None
        self._emit(EventType.TASK_RESUMED, self._status_before_pause, actor_type=request.actor_type,
                   actor_id=request.actor_id, data={"reason": request.reason})
        return DecisionAck(status=self._status.value, stage=self._stage.value)

    @resume.validator
    def _check_resume(self, request: PauseRequest) -> None:
        self._require_open("resume")
        if self._paused is None:
            raise ApplicationError(f"cannot resume: task is {self._status.value}, not paused",
                                   type="InvalidTransition")

    def _require_open(self, verb: str) -> None:
        if self._status.terminal:
            raise ApplicationError(f"cannot {verb}: task is already {self._status.value}", type="InvalidTransition")
        if self._cancel is not None:
            raise ApplicationError(f"cannot {verb}: task is being cancelled", type="InvalidTransition")

    @workflow.signal(name="approve")
    def approve_signal(self, decision: ApprovalDecision | None = None) -> None:
        if decision is None and self._drop_empty_signal("approve"):
            return
        self._decide_by_signal(decision or ApprovalDecision(), "approve")

    @workflow.signal(name="reject")
    def reject_signal(self, rejection: Rejection | None = None) -> None:
        if rejection is None and self._drop_empty_signal("reject"):
            return
        self._decide_by_signal(rejection or Rejection(), "reject")

    def _drop_empty_signal(self, verb: str) -> bool:
        if not self._patched(SIGNAL_NEEDS_DECISION):
            return False  # a run that took such a signal before keeps replaying as it did
        task = self._task
        workflow.logger.warning("ignored %s signal: it has no input naming who decides", verb, extra={
            "task_id": task.task_id if task else None, "tenant_id": task.tenant_id if task else None})
        return True

    @workflow.query(name="state")
    def state(self) -> DecisionAck:
        return DecisionAck(status=self._status.value, stage=self._stage.value)

    def _decide_by_signal(self, decision: ApprovalDecision | Rejection, verb: str) -> None:
        try:
            if isinstance(decision, ApprovalDecision):
                self._check_approve(decision)
            else:
                self._require_decidable(verb, decision)
        except (ApplicationError, ValueError) as err:
            task = self._task
            workflow.logger.warning("ignored %s signal: %s", verb, err, extra={
                "task_id": task.task_id if task else None, "tenant_id": task.tenant_id if task else None})
            return
        if isinstance(decision, ApprovalDecision):
            self._record_approval(decision)
        else:
            self._decision = decision

    def _record_approval(self, decision: ApprovalDecision) -> bool:
        """Count one approval; True once enough have come for the task to go on."""
        self._approvals.append(decision)
        assert self._task is not None
        if len(self._approvals) >= self._task.approvals_required:
            self._decision = combined(self._approvals)
            return True
        self._emit(EventType.TASK_APPROVAL_RECORDED, actor_type=decision.actor_type, actor_id=decision.actor_id,
                   data=decision_data(decision) | {"approval_id": self._approval_id,
                                                   "approvals": len(self._approvals),
                                                   "required": self._task.approvals_required})
        return False

    def _require_decidable(self, verb: str, decision: ApprovalDecision | Rejection | Completion | Failure) -> None:
        if self._status is not TaskStatus.AWAITING_APPROVAL:
            raise ApplicationError(f"cannot {verb}: task is {self._status.value}, not awaiting_approval",
                                   type="InvalidTransition")
        if self._decision is not None or self._cancel is not None:
            raise ApplicationError(f"cannot {verb}: a decision has already been taken", type="InvalidTransition")
        # A decision made for one approval request (a signed link's) never decides another: a retry's run or
        # an agent's next tool call asks afresh. Only decisions that name a request are checked, so histories
        # recorded before they could name one replay unchanged.
        wanted = getattr(decision, "approval_id", None)
        if wanted is not None and wanted != self._approval_id:
            raise ApplicationError(f"cannot {verb}: the decision was made for approval request {wanted}, which is "
                                   "no longer open; decide the open request instead", type="InvalidTransition")
        assert self._task is not None
        users, roles = self._allowed(), self._task.approver_roles
        if (users or roles) and decision.actor_id not in users and not set(decision.actor_roles) & set(roles):
            raise ApplicationError(f"{decision.actor_id} may not decide this task", type="NotAllowed")

    def _allowed(self) -> list[str]:
        """The users who may decide: the task's approvers and those escalated to. With
        neither users nor roles named, anyone may."""
        assert self._task is not None
        if self._task.approvers or self._task.approver_roles:
            return self._task.approvers + self._escalated
        return []

    async def _settled(self) -> DecisionAck:
        await workflow.wait_condition(lambda: self._status is not TaskStatus.AWAITING_APPROVAL)
        return DecisionAck(status=self._status.value, stage=self._stage.value)
