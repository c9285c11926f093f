"""A scripted in-memory Downstream: the lowest seam, for fan-out and service unit tests."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any

import pyarrow as pa

from router.downstream import Call
from router.errors import ArrakisError

HANG = "hang"  # a stream item: block until cancelled


def _raising(exc: BaseException | None) -> Iterator[pa.RecordBatch]:
    assert exc is not None
    raise exc
    yield  # a generator


class ScriptedStream:
    def __init__(self, owner: ScriptedDownstream, items: Sequence[Any]) -> None:
        self.owner = owner
        self.items = list(items)
        self.cancelled = threading.Event()
        self.closed = False
        self._rows: Iterator[pa.RecordBatch] | None = None  # read_many's
        self.received = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for item in self.items:
            if self.cancelled.is_set():
                return
            if item == HANG:
                self.cancelled.wait(20)
                return
            if isinstance(item, BaseException):
                raise item
            self.received += 1
            yield item

    def read_many(self, limit: int) -> list[pa.RecordBatch]:
        # as router.downstream.FlightStream.read_many: rows read before a failure first,
        # the failure at the next call
        if self._rows is None:
            self._rows = iter(self)
        out: list[pa.RecordBatch] = []
        try:
            out.extend(islice(self._rows, limit))
        except BaseException:
            if not out:
                raise
            self._rows = _raising(sys.exc_info()[1])
        return out

    def cancel(self) -> None:
        self.cancelled.set()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.cancel()
            with self.owner.lock:
                self.owner.open -= 1


class ScriptedDownstream:
    """``streams``: one script per stream() call (a list of items, or an exception to raise
    on open); ``answers``: request kind -> batches (or a callable of the command)."""

    def __init__(
        self,
        url: str,
        streams: Sequence[Sequence[Any] | BaseException] = (),
        answers: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.streams = list(streams)
        self.answers = answers or {}
        self.commands: list[dict[str, Any]] = []
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.open = 0
        self.opened: list[ScriptedStream] = []

    def __repr__(self) -> str:
        return f"<ScriptedDownstream {self.url} open={self.open}>"

    def stream(self, command: bytes, call: Call) -> ScriptedStream:
        self.commands.append(json.loads(command))
        self.calls.append(call)
        script = self.streams.pop(0) if self.streams else []
        if isinstance(script, BaseException):
            raise script
        with self.lock:
            self.open += 1
        opened = ScriptedStream(self, script)
        self.opened.append(opened)
        return opened

    def fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        doc = json.loads(command)
        self.commands.append(doc)
        self.calls.append(call)
        answer = self.answers.get(doc["request"], [])
        if isinstance(answer, ArrakisError):
            raise answer
        if callable(answer):
            result: list[pa.RecordBatch] = answer(doc)
            return result
        return list(answer)

    def action(self, kind: str, call: Call) -> list[bytes]:
        return [b"{}"]

    def exchange(
        self, command: bytes, batches: Sequence[pa.RecordBatch], call: Call
    ) -> list[pa.RecordBatch]:
        return list(batches)

    def close(self) -> None:
        pass


def answer_fn(fn: Callable[[dict[str, Any]], list[pa.RecordBatch]]) -> Any:
    return fn


def feeds_for(
    pool: Any,
    grid: Any,
    envelope: Any,
    *,
    ctx: Any = None,
    timer: Any = None,
    **options: Any,
) -> Any:
    """The :class:`router.streaming.Feeds` of one test request (a real service-like timer
    unless one is given; ``options``: StreamOptions fields)."""
    from router.context import RequestContext
    from router.streaming import Feeds, StreamOptions
    from router.timers import Timer

    return Feeds(
        pool,
        ctx or RequestContext("req-1"),
        Call("req-1", 1.0, "Stream"),
        timer or Timer(),
        grid,
        envelope,
        StreamOptions(**options),
    )
