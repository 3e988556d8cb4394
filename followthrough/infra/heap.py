"""The garbage collector in a long-running process.

What a process has built by the time it serves (imported modules, the app, settings, task types) lives as long
as the process. Left to the collector, every full collection walks all of it again, and one such walk, run from
inside a request or a workflow task, is the long tail of its latency. Frozen once set-up is done, those objects
are never walked again; objects made later are collected as before.
"""

import gc


def freeze_setup() -> None:
    gc.collect()  # what set-up left as garbage goes now, not into the frozen generation
    gc.freeze()
