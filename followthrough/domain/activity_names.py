"""Activity names, shared by the worker (which registers them) and the
workflows (which call them by name, so activity code never enters the
workflow sandbox)."""

DRAFT = "draft_task"
SEND = "send_task"
RECORD = "record_task_events"
NOTIFY = "notify_subscriber"
PLAN = "plan_subtasks"
RUN_DEFINITION = "run_definition"
AGENT_TURN = "agent_llm_turn"
# Each agent tool runs as its own activity, named in followthrough/domain/agent_tools.py (agent_tool_<name>).
