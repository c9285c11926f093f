"""Stitching: downstream record batches in, one on-grid block stream out.

Pure iterators, no sockets, no threads, no clock. The pipeline for one stream is::

    per group:  rebucket(batches)            -> on-grid Blocks of that group's channels
    per slice:  merge_groups(groups)         -> Blocks carrying every group's channels
                trim(blocks, lo, hi)         -> only the slice's own window
    per stream: coalesce_duplicates(chain)   -> strictly increasing, boundary copies merged
                fill_gaps(blocks, start, end)-> every grid slot of [start, end) present
                to_batches(blocks, grid)     -> single-row RecordBatches in the stream schema

Live streams replace ``merge_groups`` by :class:`LiveMerge` (deadline-paced, see
:mod:`router.stitch.live`) and join the catch-up part to the live part with
``join_at_boundary`` (no block held back).
"""

from router.stitch.blocks import Block, Grid
from router.stitch.live import LiveMerge, LiveStats
from router.stitch.merge import (
    coalesce_duplicates,
    fill_gaps,
    join_at_boundary,
    merge_groups,
    trim,
)
from router.stitch.output import to_batches
from router.stitch.rebucket import Rebucketer, rebucket

__all__ = [
    "Block",
    "Grid",
    "LiveMerge",
    "LiveStats",
    "Rebucketer",
    "coalesce_duplicates",
    "fill_gaps",
    "join_at_boundary",
    "merge_groups",
    "rebucket",
    "to_batches",
    "trim",
]
