"""agent: a model works towards an answer with tools (seed 003's tasks with a prompt, allowed tools and
model options).

The workflow runs the loop (followthrough/workflows/agent_loop.py): one model call per turn, each tool call it asks
for as an activity of its own; risky calls wait for a person's approval; the loop ends on a final
answer or at ``max_turns``. The tools are registered in followthrough/domain/agent_tools.py. ``{{variables}}``
in the prompt are filled when the task comes from a definition (followthrough/services/definitions.py).
"""


from pydantic import BaseModel, ConfigDict, Field, field_validator

from followthrough.domain import allowed_hosts
from followthrough.domain.agent_tools import SUBTASK_TYPES_REFUSED, TOOLS
from followthrough.domain.contracts import Draft
from followthrough.domain.lifecycle import TaskMode
from followthrough.tasktypes.base import DraftContext, TaskType

MAX_TURNS = 50


class AgentPayload(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    prompt: str = Field(min_length=1, max_length=20_000, description="What the agent is to do.")
    system: str | None = Field(None, max_length=20_000, description="A system message before the prompt.")
    allowed_tools: list[str] = Field(default_factory=list, max_length=20,
                                     description="The tools it may call; others are refused.")
    subtask_types: list[str] = Field(default_factory=list, max_length=20,
                                     description="The task types create_subtask may create; its subtasks run in "
                                                 "a mode no looser than this task's, with its approvers.")
    allowed_hosts: list[str] | None = Field(
        None, max_length=100,
        description="The hosts http_request and fetch_and_extract may reach (every redirect too), and the "
                    "subtasks' URLs: host names, *.example.com wildcards or IP addresses; [] none. Default: any "
                    "host the SSRF guard and the tenant's list (FOLLOWTHROUGH_GUARDRAILS agent.allowed_hosts) "
                    "allow. Narrows only: a host must be on both lists.")
    model: str | None = Field(None, max_length=200, description="Default: the configured LLM model.")
    max_turns: int = Field(10, ge=1, le=MAX_TURNS, description="Model calls at most; then it ends unanswered.")
    temperature: float | None = Field(None, ge=0, le=2)

    @field_validator("allowed_tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(TOOLS))
        if unknown:
            raise ValueError(f"unknown tools {', '.join(unknown)}; known: {', '.join(sorted(TOOLS))}")
        return list(dict.fromkeys(value))

    @field_validator("subtask_types")
    @classmethod
    def _subtask_types(cls, value: list[str]) -> list[str]:
        refused = sorted(set(value) & SUBTASK_TYPES_REFUSED)
        if refused:
            raise ValueError(f"an agent may not create {', '.join(refused)} tasks (agents, and tasks that split "
                             f"into subtasks of their own); list types that do one thing each")
        return list(dict.fromkeys(value))

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else allowed_hosts.parse(value)


async def draft(payload: AgentPayload, _ctx: DraftContext) -> Draft:
    # The loop never drafts; this shows what the task will ask, for listings.
    return Draft(channel="none", subject="Agent task", body=payload.prompt)


TASK_TYPE = TaskType(
    name="agent",
    description="A model works on a prompt in turns, calling the allowed tools (http_request, draft_email, "
                "send_email, create_subtask); risky calls wait for approval; ends on its answer or at max_turns "
                "(seed 003).",
    payload_model=AgentPayload,
    channel="none",
    draft=draft,
    # The mode does not change the loop: risky tool calls always wait for a person.
    default_mode=TaskMode.AUTONOMOUS,
    needs_llm=True,
)
