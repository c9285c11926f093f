"""Stitching units on in-memory batches, and the whole pipeline against a reference."""

from __future__ import annotations

from itertools import chain, pairwise
from typing import Any

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from router.stitch import (
    Block,
    coalesce_duplicates,
    fill_gaps,
    merge_groups,
    rebucket,
    to_batches,
    trim,
)
from tests.router.blockgen import NS, downstream_blocks, grid_for, meta, rows, values

S = 62_500_000  # 1/16 s
A = meta("H1:A-X", 256, S)
B = meta("H1:B-Y", 512, S)
SLOW = meta("H1:C-Z", 16, 4 * S)  # stride 0.25 s


def test_rebucket_passes_on_grid_blocks_through_unchanged() -> None:
    grid = grid_for([A, B], S)
    batches = downstream_blocks([A, B], [0, S, 2 * S], S)
    out = list(rebucket(batches, grid))
    assert [b.time for b in out] == [0, S, 2 * S]
    assert all(b.source is batches[i] for i, b in enumerate(out))


def test_rebucket_joins_short_blocks_into_lcm_blocks() -> None:
    grid = grid_for([A, SLOW], 4 * S)
    out = list(rebucket(downstream_blocks([A], [S * k for k in range(8)], S), grid, ["H1:A-X"]))
    assert [b.time for b in out] == [0, 4 * S]
    assert out[1].cells["H1:A-X"].flatten().to_pylist() == list(values(256, 4 * S, 64))


def test_rebucket_splits_long_blocks_and_places_offgrid_rows() -> None:
    grid = grid_for([A], S)
    # one 4-stride row starting half a stride off grid
    off = S // 2
    out = list(rebucket(downstream_blocks([A], [off], 4 * S), grid))
    assert [b.time for b in out] == [0, S, 2 * S, 3 * S, 4 * S]
    first = out[0].cells["H1:A-X"].flatten().to_pylist()
    assert first[:8] == [None] * 8 and first[8:] == list(values(256, off, 8))


def test_rebucket_drops_late_rows() -> None:
    grid = grid_for([A], S)
    batches = downstream_blocks([A], [0, 2 * S, S], S)
    out = list(rebucket(batches, grid))
    assert [b.time for b in out] == [0, 2 * S]


def test_merge_groups_unions_cells_by_time() -> None:
    ga = [Block(0, {"a": pa.array([[1]])}), Block(2, {"a": pa.array([[2]])})]
    gb = [Block(1, {"b": pa.array([[3]])}), Block(2, {"b": pa.array([[4]])})]
    out = list(merge_groups([ga, gb]))
    assert [(b.time, sorted(b.cells)) for b in out] == [(0, ["a"]), (1, ["b"]), (2, ["a", "b"])]


def test_trim_and_fill_gaps() -> None:
    blocks = [Block(t, {}) for t in (0, 10, 40, 60)]
    kept = list(trim(blocks, 10, 60))
    assert [b.time for b in kept] == [10, 40]
    filled = list(fill_gaps(kept, 0, 65, 10))
    assert [b.time for b in filled] == [0, 10, 20, 30, 40, 50, 60]


def test_coalesce_duplicates_fills_nulls_of_first_copy() -> None:
    first = Block(10, {"a": pa.array([[1.0, None]])})
    second = Block(10, {"a": pa.array([[9.0, 2.0]]), "b": pa.array([[5.0]])})
    out = list(coalesce_duplicates([Block(0, {}), first, second, Block(5, {}), Block(20, {})]))
    assert [b.time for b in out] == [0, 10, 20]
    assert out[1].cells["a"].to_pylist() == [[1.0, 2.0]]
    assert out[1].cells["b"].to_pylist() == [[5.0]]


# ---------------------------------------------------------------------- whole pipeline


def _pipeline(slices: Any, grid: Any, start: int, end: int) -> Any:
    per_slice = []
    for lo, hi, groups in slices:
        merged = merge_groups(rebucket(b, grid, chans) for chans, b in groups)
        per_slice.append(trim(merged, grid.floor(lo), hi))
    blocks = fill_gaps(
        coalesce_duplicates(chain.from_iterable(per_slice)), grid.floor(start), end, grid.duration
    )
    return rows(to_batches(blocks, grid))


@st.composite
def scenarios(draw):  # type: ignore[no-untyped-def]
    metas = [A, B, SLOW] if draw(st.booleans()) else [A, B]
    duration = 4 * S if SLOW in metas else S
    grid = grid_for(metas, duration)
    nblocks = draw(st.integers(1, 12))
    start = draw(st.integers(0, duration - 1)) + duration  # maybe off grid
    end = grid.floor(start) + nblocks * duration - draw(st.integers(0, duration - 1))
    # slice boundaries strictly inside (start, end)
    cuts = sorted(set(draw(st.lists(st.integers(start + 1, max(start + 1, end - 1)), max_size=2))))
    bounds = [start, *[c for c in cuts if start < c < end], end]
    present: dict[tuple[str, int], bool] = {}
    slices = []
    for lo, hi in pairwise(bounds):
        groups = []
        split = draw(st.booleans())
        parts = [[m] for m in metas] if split else [metas]
        for part in parts:
            stride = max(m.stride or 0 for m in part)
            t0 = grid.floor(lo)
            times = list(range(t0, hi, stride))
            keep = [t for t in times if draw(st.integers(0, 4)) > 0]  # drop ~20%
            dup = keep + ([keep[-1]] if keep and draw(st.booleans()) else [])
            for m in part:
                for t in keep:
                    for sub in range(t, t + stride, m.stride or stride):
                        present[(m.name, sub)] = True
            groups.append(([m.name for m in part], downstream_blocks(part, dup, stride)))
        slices.append((lo, hi, groups))
    return metas, grid, start, end, slices, present


@given(scenarios())
def test_pipeline_matches_reference(scenario) -> None:  # type: ignore[no-untyped-def]
    metas, grid, start, end, slices, present = scenario
    out = _pipeline(slices, grid, start, end)
    times = [t for t, _ in out]
    d = grid.duration
    assert times == list(range(grid.floor(start), end, d))  # on grid, increasing, complete
    for t, cols in out:
        for m in metas:
            got = cols[m.name]
            n = m.sample_rate * d // NS
            assert len(got) == n  # full length, never a null list
            stride = m.stride or 0
            for k in range(d // stride):
                sub = t + k * stride
                seg = got[k * (n * stride // d) : (k + 1) * (n * stride // d)]
                if present.get((m.name, sub)):
                    assert seg == list(values(m.sample_rate, sub, len(seg)))
                else:
                    assert seg == [None] * len(seg)
