"""``RetentionTree``: which endpoints retain which data ages, answered without a scan.

Retention windows are fixed in *age* space (age = N - t, with N the request's now truncated to
a whole second), so one tree serves every request of a scope map's lifetime; a query maps its
absolute times to ages with the request's ``now``. An endpoint with window ``newest..oldest``
covers the ages ``(newest, oldest]`` — which is the half-open absolute interval
``[N - oldest, N - newest)`` — and a live endpoint (newest 0) also covers every negative age,
i.e. the present and the future.

Layout: intervals sorted by their lower age bound, plus an implicit segment tree holding the
maximum upper bound of each node's range. "Who overlaps ``(a0, a1]``" is then a binary search
for the prefix with ``lower < a1`` and a descent into the subtrees whose maximum upper bound is
``> a0``: O(log n + k·log n) for k results, never a pass over all n windows.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
INF = math.inf
_SMALL = 16  # below this many windows a linear pass is faster than the tree walk


class RetentionTree(Generic[T]):
    """Immutable set of ``(item, lower_age, upper_age)`` windows covering ``(lower, upper]``.

    Ages are integer nanoseconds; ``-inf``/``inf`` bounds are allowed.

    >>> import math
    >>> tree = RetentionTree([("live", -math.inf, 600), ("archive", 300, math.inf)])
    >>> [item for item, _, _ in tree.overlapping(0, 100)]
    ['live']
    >>> [item for item, _, _ in tree.overlapping(500, 700)]
    ['live', 'archive']
    >>> tree.split_points(0, 1000)
    [300, 600]
    """

    __slots__ = ("_his", "_items", "_los", "_max", "_size")

    def __init__(self, windows: Iterable[tuple[T, float, float]]) -> None:
        ordered = sorted(windows, key=lambda w: w[1])
        self._items = [w[0] for w in ordered]
        self._los = [w[1] for w in ordered]
        self._his = [w[2] for w in ordered]
        n = len(ordered)
        size = 1
        while size < n:
            size *= 2
        self._size = size
        self._max: list[float] = []
        if n > _SMALL:
            # Segment tree over positions: node i covers children 2i, 2i+1; leaves at size+j.
            self._max = [-INF] * (2 * size)
            self._max[size : size + n] = self._his
            for i in range(size - 1, 0, -1):
                self._max[i] = max(self._max[2 * i], self._max[2 * i + 1])

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"RetentionTree({len(self._items)} windows)"

    def overlapping(self, a0: float, a1: float) -> list[tuple[T, float, float]]:
        """Windows sharing at least one age with ``(a0, a1]`` (``a0 < a1``), by lower bound."""
        stop = bisect_left(self._los, a1)  # windows with lower < a1
        if not self._max:
            return [
                (self._items[j], self._los[j], self._his[j])
                for j in range(stop)
                if self._his[j] > a0
            ]
        return [(self._items[j], self._los[j], self._his[j]) for j in self._walk(stop, a0)]

    def covering(self, age: float) -> list[tuple[T, float, float]]:
        """Windows containing ``age`` (integer ns; ``-inf`` asks for live windows)."""
        if age == -INF:
            stop = bisect_right(self._los, -INF)
            return [(self._items[j], self._los[j], self._his[j]) for j in range(stop)]
        return self.overlapping(age - 1, age)

    def split_points(self, a0: float, a1: float) -> list[float]:
        """The window bounds strictly inside ``(a0, a1)``: where coverage may change."""
        points = set()
        for _, lo, hi in self.overlapping(a0, a1):
            if a0 < lo < a1:
                points.add(lo)
            if a0 < hi < a1:
                points.add(hi)
        return sorted(points)

    def _walk(self, stop: int, a0: float) -> Iterator[int]:
        # Iterative descent: visit only subtrees that intersect [0, stop) and whose maximum
        # upper bound exceeds a0, so every visited leaf is a result.
        stack = [(1, 0, self._size)]
        found: list[int] = []
        while stack:
            node, left, right = stack.pop()
            if left >= stop or self._max[node] <= a0:
                continue
            if right - left == 1:
                found.append(left)
                continue
            mid = (left + right) // 2
            stack.append((2 * node + 1, mid, right))
            stack.append((2 * node, left, mid))
        return iter(found)
