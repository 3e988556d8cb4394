"""The changes made to workflow code under running tasks, and which of them a run takes as given.

Each change is named by a patch id. ``workflow.patched(id)`` tells a run whether it takes the new branch. On
first use it records a marker, and the SDK upserts the ``TemporalChangeVersion`` search attribute with it: two
commands, two history events and a visibility write on the server, for each patch and each run. A run started
on code that already has a patch needs none of them, because it can only take the new branch. So every run a
TaskCreator starts (the API's, and the worker's: schedules, an agent's subtasks) is stamped with a patch level
(``TaskInput.patch_level``, inherited by subtasks); a run at level N takes every patch of levels 1…N without
asking and writes nothing for them. Level-0 runs (started by hand, recorded before levels existed) and patches
in no level still go through ``workflow.patched``, and replay as they always did.

A level must be known to every worker that may run or replay a run stamped with it, or the two replay
differently: an older worker asks ``workflow.patched`` (markers recorded), a newer one does not (markers it
does not expect). So a level is *known* (in ``LEVELS``) one release before it is *stamped*: runs are stamped
with ``FOLLOWTHROUGH_WORKFLOW_PATCH_LEVEL``, by default ``STAMPED_LEVEL``, which stays a release behind
``KNOWN_LEVEL``; raising it early is for a fleet whose every worker already knows the level. A worker handed a
level it does not know fails the workflow task (it is retried, until a worker that knows the level takes it)
rather than guess.
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
# The newest level this code knows, and the level runs are stamped with by default: one release behind, so a
# fleet mixing this release's workers with the last one's (a rolling deploy, a rollback) never meets a level
# one of them does not know. Raise STAMPED_LEVEL to a level in the release after the one that made it known.
KNOWN_LEVEL = len(LEVELS) - 1
STAMPED_LEVEL = 0
# GIVEN[n]: every patch a run of level n takes without a marker.
GIVEN: tuple[frozenset[str], ...] = tuple(frozenset().union(*LEVELS[:n + 1]) for n in range(len(LEVELS)))


class UnknownPatchLevel(RuntimeError):
    """Not an ApplicationError: it fails the workflow task, not the workflow, so a worker that knows the level
    can take the run."""


def known_level(level: int) -> int:
    """The run's level, if this code knows it; a run stamped by newer code is left for a newer worker."""
    if level > KNOWN_LEVEL:
        raise UnknownPatchLevel(f"the run is stamped with patch level {level}; this worker knows levels up to "
                                f"{KNOWN_LEVEL}: it needs a worker on newer code")
    return max(0, level)


def patched(level: int, patch_id: str) -> bool:
    """``workflow.patched(patch_id)`` for a run of this (known) level: True, with nothing recorded, for a patch
    the level takes as given."""
    return patch_id in GIVEN[level] or workflow.patched(patch_id)
