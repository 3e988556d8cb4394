"""The agent loop: how TaskWorkflow runs a task of type ``agent``.

A mixin kept out of the workflow module (like TaskSubtasks). Each turn is one
model call (an activity); each tool call the model asks for is an activity of
its own, summarised in the Web UI ("tool http_request GET https://…"). A tool
the task does not allow, an unknown one or bad arguments are refused, and the
refusal is the model's answer for that call. A risky call waits for a
person's approval through the task's approval flow (the same records, inbox,
approvers and approve/reject Updates and signals); a rejection is the model's
answer. The loop ends on an answer without tool calls, or after max_turns.

The transcript is workflow state: finished turns and tool calls are in the
history, so a worker that dies mid-loop is replaced by one that replays them
and goes on at the same turn, repeating none of them. Tool outputs are cut to
TOOL_OUTPUT_LIMIT characters before the model (and the history) sees them.
"""

import asyncio
import json
from dataclasses import asdict
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType

from followthrough.domain import activity_names

from followthrough.domain import policies
from followthrough.domain.agent_tools import TOOLS, AgentTool, out_of_bounds
from followthrough.domain.contracts import (AgentBounds, AgentProgress, AgentTurnRequest, AgentTurnResult, ApprovalDecision,
                                     CarriedState, Completion, Draft, Rejection, TaskChanges, TaskInput, TaskOutcome,
                                     ToolCallRequest, ToolCallResult)
from followthrough.domain.lifecycle import EventType, Stage, TaskMode, TaskStatus
from followthrough.workflows.patches import AGENT_CONTINUES, TOOL_BOUNDS
from followthrough.workflows.task_events import TaskEventLog

# What the model and the history see of one tool's output, and of text in events.
TOOL_OUTPUT_LIMIT = 4000
EVENT_TEXT_LIMIT = 1000
# Calls past this many in one turn are refused: with max_turns (at most 50) it bounds the transcript, which
# every turn's activity carries, to about 50 × 8 × 4,000 characters of tool output.
MAX_CALLS_PER_TURN = 8


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[… cut: {len(text) - limit} more characters]"


class AgentLoop(TaskEventLog):
    _decision: ApprovalDecision | Rejection | Completion | None
    _approvals: list[ApprovalDecision]
    _approval_id: str | None
    _escalated: list[str]

    _awaiting: dict | None
    _may_continue: bool
    _requested_at: Any

    async def _hold(self, continuable: bool = False) -> None:  # provided by the workflow: waits while paused
        raise NotImplementedError

    async def _await_decision(self, task: TaskInput, mode: TaskMode, flags: list[str], blocked: str | None = None,
                              reason: str | None = None, resumed: CarriedState | None = None,
                              ) -> ApprovalDecision | Rejection | Completion | None:
        raise NotImplementedError  # provided by the workflow

    async def _run_agent(self, task: TaskInput, resumed: CarriedState | None = None) -> TaskOutcome:
        """Run the loop, or go on with it where a run that continued as new left it (``resumed.agent``)."""
        spec = task.payload
        allowed = [name for name in spec.get("allowed_tools") or [] if name in TOOLS]
        offered = [TOOLS[name].openai_schema() for name in allowed]
        max_turns = int(spec.get("max_turns") or 10)
        progress = resumed.agent if resumed is not None else None
        # Runs from here on continue as new while they wait (paused between turns, or for a risky call's
        # decision); older histories replay as they ran.
        self._agent_continues = self._may_continue and self._patched(AGENT_CONTINUES)
        if progress is None:
            messages: list[dict[str, Any]] = ([{"role": "system", "content": spec["system"]}] if spec.get("system")
                                              else []) + [{"role": "user", "content": spec["prompt"]}]
            started, first_turn = workflow.now(), 1
            stats: dict[str, Any] = {"turns": 0, "tool_calls": 0, "tool_calls_by_tool": {}, "refused": 0,
                                     "prompt_tokens": 0, "completion_tokens": 0, "model": None}
            self._emit(EventType.TASK_STATUS_CHANGED, TaskStatus.IN_PROGRESS, Stage.THINKING,
                       changes=TaskChanges(started_at=started, workflow_run_id=workflow.info().run_id))
        else:
            messages, stats, started, first_turn = progress.messages, progress.stats, progress.started, progress.turn
        answer: str | None = None
        for turn in range(first_turn, max_turns + 1):
            # A run resumed while a call of this turn waited goes on with that call; else the turn starts here.
            pending = progress.calls if progress is not None else None
            start = progress.index if progress is not None and pending is not None else 1
            if pending is None:
                await self._agent_hold(AgentProgress(turn=turn, messages=messages, stats=stats, started=started))
                if self._stage is not Stage.THINKING:
                    self._emit(EventType.TASK_STATUS_CHANGED, stage=Stage.THINKING)
                try:
                    said = await workflow.execute_activity(
                        activity_names.AGENT_TURN,
                        AgentTurnRequest(task_id=task.task_id, tenant_id=task.tenant_id, turn=turn,
                                         messages=messages, tools=offered, model=spec.get("model"),
                                         temperature=spec.get("temperature")),
                        result_type=AgentTurnResult, start_to_close_timeout=policies.AGENT_TURN_TIMEOUT,
                        heartbeat_timeout=policies.AGENT_TURN_HEARTBEAT_TIMEOUT,
                        retry_policy=policies.AGENT_TURN_RETRY, summary=f"LLM turn {turn} of {max_turns}",
                    )
                except ActivityError as err:
                    return self._fail(f"turn {turn}", err)
                stats["turns"] = turn
                stats["model"] = said.model
                stats["prompt_tokens"] += said.prompt_tokens or 0
                stats["completion_tokens"] += said.completion_tokens or 0
                # Every call gets an id its result can name, whatever the endpoint gave.
                calls = [c | {"id": c.get("id") or f"call_{turn}_{n}"}
                         for n, c in enumerate(said.message.get("tool_calls") or [], 1)]
                messages.append({"role": "assistant", "content": said.message.get("content"),
                                 **({"tool_calls": calls} if calls else {})})
                self._emit(EventType.TASK_AGENT_TURN, data={
                    "turn": turn, "model": said.model, "prompt_tokens": said.prompt_tokens,
                    "completion_tokens": said.completion_tokens, "latency_ms": said.latency_ms,
                    "content": cut(said.message.get("content") or "", EVENT_TEXT_LIMIT),
                    "tool_calls": [c["function"]["name"] for c in calls]})
                if not calls:
                    answer = said.message.get("content") or ""
                    break
            else:
                calls = pending
            for index, call in enumerate(calls, 1):
                if index < start:
                    continue
                here = AgentProgress(turn=turn, messages=messages, stats=stats, started=started, calls=calls,
                                     index=index)
                output, outcome = await self._call_tool(task, allowed, turn, index, call, here,
                                                        resumed if pending is not None and index == start else None)
                name = call["function"]["name"]
                stats["tool_calls"] += 1
                stats["tool_calls_by_tool"][name] = stats["tool_calls_by_tool"].get(name, 0) + 1
                stats["refused"] += outcome == "refused"
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
            progress = None
        ended = "answer" if answer is not None else "max_turns"
        result = {
            "ended_by": ended, "answer": answer, "turns": stats["turns"], "max_turns": max_turns,
            "messages": len(messages), "tool_calls": stats["tool_calls"],
            "tool_calls_by_tool": stats["tool_calls_by_tool"], "refused_tool_calls": stats["refused"],
            "model": stats["model"],
            "usage": {"prompt_tokens": stats["prompt_tokens"], "completion_tokens": stats["completion_tokens"],
                      "total_tokens": stats["prompt_tokens"] + stats["completion_tokens"]},
            "duration_seconds": round((workflow.now() - started).total_seconds(), 3),
            "transcript": messages,
        }
        return self._finish(TaskStatus.COMPLETED, EventType.TASK_EXECUTION_COMPLETED, result=result,
                            data={"ended_by": ended, "turns": stats["turns"], "tool_calls": stats["tool_calls"]})

    async def _agent_hold(self, here: AgentProgress) -> None:
        """Wait while the task is paused before a turn; a run that may, hands over meanwhile with ``here``."""
        if not self._agent_continues:
            await self._hold()
            return
        self._awaiting = {"agent": here}
        await self._hold(continuable=True)
        self._awaiting = None

    async def _call_tool(self, task: TaskInput, allowed: list[str], turn: int, index: int, call: dict[str, Any],
                         here: AgentProgress, resumed: CarriedState | None = None) -> tuple[str, str]:
        """Run (or refuse) one tool call: what the model is told, and how it went (ok, refused, rejected,
        failed); each is recorded as an event. ``resumed`` when a continued run goes on waiting for its decision."""
        name = call["function"]["name"]
        raw = call["function"].get("arguments") or "{}"
        event: dict[str, Any] = {"turn": turn, "index": index, "tool": name, "call_id": call.get("id")}
        tool = TOOLS.get(name)
        arguments: dict[str, Any] = {}
        refusal = None
        if index > MAX_CALLS_PER_TURN:
            refusal = f"refused: at most {MAX_CALLS_PER_TURN} tool calls are run per turn"
        elif tool is None:
            refusal = f"refused: there is no tool {name!r}"
        elif name not in allowed:
            refusal = (f"refused: the tool {name!r} is not allowed for this task; "
                       f"allowed: {', '.join(allowed) or 'none'}")
        else:
            try:
                arguments = tool.check(raw)
            except ValueError as err:
                refusal = f"refused: {err}"
            else:
                if self._patched(TOOL_BOUNDS):
                    refusal = out_of_bounds(task.payload, name, arguments)
        if refusal is not None or tool is None:
            return self._tool_ended(event | {"arguments": cut(raw, EVENT_TEXT_LIMIT)}, "refused", refusal or "")
        event["arguments"] = arguments
        risky = self._risky(tool, arguments)
        if risky:
            refusal = await self._approve_tool(task, tool.summary(arguments), name, arguments, here, resumed)
            if refusal is not None:
                return self._tool_ended(event, "rejected", refusal)
        if self._stage is not Stage.USING_TOOL:
            self._emit(EventType.TASK_STATUS_CHANGED, stage=Stage.USING_TOOL)
        try:
            done = await workflow.execute_activity(
                tool.activity,
                ToolCallRequest(task_id=task.task_id, tenant_id=task.tenant_id, tool=name, arguments=arguments,
                                idempotency_key=f"{task.task_id}:{task.run_number}:agent:{turn}:{index}",
                                run_number=task.run_number, subtask_types=list(task.payload.get("subtask_types") or []),
                                created_by=task.created_by, bounds=_bounds(task)),
                result_type=ToolCallResult, start_to_close_timeout=policies.TOOL_TIMEOUT,
                heartbeat_timeout=policies.TOOL_HEARTBEAT_TIMEOUT, retry_policy=policies.TOOL_RETRY,
                summary=tool.summary(arguments),
                # A risky call that has begun finishes before a cancel takes effect (like a task's send), so a
                # cancelled task never leaves an unknown effect behind.
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED if risky
                else ActivityCancellationType.TRY_CANCEL,
            )
        except ActivityError as err:
            if isinstance(err.cause, CancelledError):
                raise asyncio.CancelledError() from err
            message = err.cause.message if isinstance(err.cause, ApplicationError) else str(err.cause or err)
            return self._tool_ended(event, "failed", f"the tool failed: {message}")
        return self._tool_ended(event | {"detail": done.detail}, "ok", done.output)

    def _risky(self, tool: AgentTool, arguments: dict[str, Any]) -> bool:
        if tool.name == "create_subtask" and not self._patched(TOOL_BOUNDS):
            return False  # a history from before subtasks were approved first
        return tool.risky(arguments)

    def _tool_ended(self, event: dict[str, Any], outcome: str, output: str) -> tuple[str, str]:
        output = cut(output, TOOL_OUTPUT_LIMIT)
        self._emit(EventType.TASK_AGENT_TOOL_CALLED,
                   data=event | {"outcome": outcome, "output": cut(output, EVENT_TEXT_LIMIT)})
        return output, outcome

    async def _approve_tool(self, task: TaskInput, summary: str, name: str, arguments: dict[str, Any],
                            here: AgentProgress, resumed: CarriedState | None) -> str | None:
        """A person decides on a risky call; None when approved, else what the model is told."""
        if resumed is None:
            shown = Draft(channel="tool", subject=summary, body=json.dumps(arguments, indent=2, ensure_ascii=False),
                          data={"tool": name, "arguments": arguments})
            # The call is the task's draft while it waits, so the inbox and GET /tasks/{id} show it.
            self._emit(EventType.TASK_DRAFTED, data={"tool": name}, changes=TaskChanges(draft=asdict(shown)))
        if self._agent_continues:
            self._awaiting = {"agent": here}
        decision = await self._await_decision(task, TaskMode.REVIEW, [f"risky tool {name}"],
                                              reason=f"risky tool {name}", resumed=resumed)
        self._awaiting = None
        approval = {"approval_id": self._approval_id, "tool": name}
        # The next risky call asks afresh.
        self._decision, self._approvals, self._approval_id, self._escalated = None, [], None, []
        self._requested_at = None
        if isinstance(decision, ApprovalDecision):
            self._emit(EventType.TASK_APPROVED, TaskStatus.IN_PROGRESS, Stage.USING_TOOL,
                       actor_type=decision.actor_type, actor_id=decision.actor_id,
                       data={"comment": decision.comment} | approval)
            return None
        if isinstance(decision, Rejection):
            self._emit(EventType.TASK_REJECTED, TaskStatus.IN_PROGRESS, Stage.THINKING,
                       actor_type=decision.actor_type, actor_id=decision.actor_id,
                       data={"reason": decision.reason} | approval)
            because = f": {decision.reason}" if decision.reason else ""
            return f"rejected: {decision.actor_id} did not approve this call{because}"
        self._emit(EventType.TASK_EXPIRED, TaskStatus.IN_PROGRESS, Stage.THINKING,
                   data={"timeout_seconds": task.approval_timeout_seconds} | approval)
        return "rejected: no one approved this call before the deadline"


def _bounds(task: TaskInput) -> AgentBounds:
    hosts = task.payload.get("allowed_hosts")
    return AgentBounds(mode=task.mode, allowed_hosts=None if hosts is None else list(hosts),
                       approvers=list(task.approvers), approvals_required=task.approvals_required,
                       approver_roles=list(task.approver_roles), approval_timeout_seconds=task.approval_timeout_seconds,
                       priority=task.priority)
