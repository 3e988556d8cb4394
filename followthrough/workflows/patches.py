"""The changes made to workflow code under running tasks, and which of them a run takes as given.

Each change is named by a patch id. ``workflow.patched(id)`` tells a run whether it takes the new branch. On
first use it records a marker, and the SDK also upserts the ``TemporalChangeVersion`` search attribute along
with it: a command, a history event and a visibility write on the server, for each patch and each run. A run
started on code that already has a patch needs neither, because it can only take the new branch. So the API
stamps every run it starts with the patch level it was built for (``TaskInput.patch_level``). A run at level N
takes every patch of levels 1…N without asking, and writes nothing for them. Runs recorded before the levels
existed, runs started by hand (level 0) and patches newer than a run's level still go through
``workflow.patched``, and they replay as they always did.

A new patch joins no level: it goes through ``workflow.patched``. Once the release that carries it is out, it
may join a new level, together with ``PATCH_LEVEL`` raised. Workers must run the new level's code before any
API stamps it: a worker that does not know a level would replay such a run differently.
"""

from temporalio import workflow

# Runs that reach the due wait on this code wait on a condition that a reschedule or a
# pause can wake; older runs keep the plain timer they started with.
PAUSABLE_DUE_WAIT = "pausable-due-wait"
# A send whose attempts failed only because the database was away is retried after a wait.
SEND_OUTLASTS_OUTAGE = "send-outlasts-database-outage"
# A decision signal without input names no decider and carries no payload the codec could refuse: dropped.
SIGNAL_NEEDS_DECISION = "decision-signal-needs-input"
# A deadline approves only a task nothing held: never one a guardrail flagged or a drafter blocked (those
# expire). Older runs approved at the deadline whatever the flags, and replay so.
DEADLINE_HONOURS_HOLDS = "deadline-honours-guardrail-holds"
# A cancel can come with the start, in the first workflow task, before run() has begun the flow: it is kept
# and the flow ends cancelled before its first step. Such a cancel failed the workflow task before.
CANCEL_BEFORE_START = "cancel-before-start"
# A run waiting before its draft (for its due time, or paused) or with its draft waiting for a decision continues
# as new when Temporal suggests it, so pauses, resumes, reschedules and signals never fill its history. Decided
# at the run's start: older runs never did.
CONTINUE_AS_NEW = "continue-as-new-while-waiting"
# A continued run's reschedule that arrives with its start is kept; it was overwritten by the carried due time.
EARLY_RESCHEDULE_KEPT = "continued-run-keeps-early-reschedule"
# An inbound event a task's stop_on names ends it cancelled while it waits (the ``stop`` update), or before its
# first step when the event came before the task (TaskInput.stopped_by). No older run was stopped so.
STOP_ON_EVENT = "stop-on-event"
# A person can report that the work of a task waiting for them failed (the ``fail`` update): the task fails with
# their error. No older run took such an update.
PERSON_REPORTS_FAILURE = "person-reports-failure"
# Runs that start on this code keep their search attributes current (upserts are commands); older runs
# never did.
SEARCH_ATTRIBUTES = "search-attributes"
# Runs from here on refuse calls outside the agent's hosts and subtask types before anyone is asked, and treat
# create_subtask as risky; histories recorded before replay as they ran.
TOOL_BOUNDS = "agent-tool-bounds"
# Runs from here on continue as new while they wait, paused between turns or for a risky call's decision, with
# the loop's progress carried over (CarriedState.agent); older runs never did.
AGENT_CONTINUES = "agent-continues-as-new"
# A cadence's steps wait (each its StepWait) before they start. No run before this code had a cadence.
CADENCE_STEPS = "cadence-step-waits"

# LEVELS[n]: the patches a run of level n takes as given beyond level n - 1's.
LEVELS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset({PAUSABLE_DUE_WAIT, SEND_OUTLASTS_OUTAGE, SIGNAL_NEEDS_DECISION, DEADLINE_HONOURS_HOLDS,
               CANCEL_BEFORE_START, CONTINUE_AS_NEW, EARLY_RESCHEDULE_KEPT, STOP_ON_EVENT, PERSON_REPORTS_FAILURE,
               SEARCH_ATTRIBUTES, TOOL_BOUNDS, AGENT_CONTINUES, CADENCE_STEPS}),
)
# What the API stamps on the runs it starts.
PATCH_LEVEL = len(LEVELS) - 1
# GIVEN[n]: every patch a run of level n takes without a marker.
GIVEN: tuple[frozenset[str], ...] = tuple(frozenset().union(*LEVELS[:n + 1]) for n in range(len(LEVELS)))


def patched(level: int, patch_id: str) -> bool:
    """``workflow.patched(patch_id)`` for a run of this level: True, with nothing recorded, for a patch the
    level takes as given. A level this code does not know (a newer API's) takes what the newest known does."""
    return patch_id in GIVEN[max(0, min(level, PATCH_LEVEL))] or workflow.patched(patch_id)
