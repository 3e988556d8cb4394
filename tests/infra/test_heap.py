"""followthrough/infra/heap.py: what exists at the end of set-up leaves the collector's walks; what comes later is
still collected, cycles included."""

import gc
import weakref

from followthrough.infra import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_setup_is_frozen_and_later_garbage_still_collected():
    made_before = _Node()
    try:
        heap.freeze_setup()
        assert gc.get_freeze_count() > 0
        later = _Node()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
        assert made_before.me is made_before  # frozen, so kept whatever collections run
    finally:
        gc.unfreeze()
