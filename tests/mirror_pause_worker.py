"""The worker, except that a mirror write carrying an approval request stops for good right after its commit,
having touched the file named by argv[1]: the test kills the process there, between the commit and the
workflow hearing of it."""

import sys
import threading
from pathlib import Path

import followthrough.activities.mirror
from followthrough.cli import main
from followthrough.domain.lifecycle import EventType

_record_batches = followthrough.activities.mirror.record_batches
MARKER = Path(sys.argv[1])


async def _record_then_stop(engine, batches):
    acks = await _record_batches(engine, batches)
    if any(e.type == EventType.TASK_APPROVAL_REQUESTED.value for b in batches for e in b.events):
        MARKER.touch()
        threading.Event().wait()  # the whole worker stands still until it is killed
    return acks


followthrough.activities.mirror.record_batches = _record_then_stop

if __name__ == "__main__":
    sys.exit(main(["worker"]))
