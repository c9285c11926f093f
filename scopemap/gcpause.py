"""Pausing the cyclic garbage collector while a large acyclic structure is built."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Run the block with the cyclic GC paused; restore it after.

    Loading or indexing a large map allocates hundreds of thousands of small acyclic
    objects (nodes, dicts, entries); the collector would rescan the growing heap many times
    over and more than double the time. On the way out, the objects made meanwhile are
    moved straight to the oldest generation (``gc.freeze`` then ``gc.unfreeze``: list
    splices, no scan) instead of being scanned by the young collection that the next
    allocation would start, a scan of the whole new map (0.2 s for 100,000 endpoints) that
    finds nothing to free. Not done when something else holds frozen objects, which
    ``unfreeze`` would release as well.

    >>> with paused_gc():
    ...     gc.isenabled()
    False
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()
