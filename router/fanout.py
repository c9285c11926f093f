"""Fan-out: running one request's downstream calls, with replica failover (the I/O side of
:mod:`router.replicas`, which decides what to try next).

* :func:`fetch_first` — a unary metadata call on the first replica that answers, each call
  bounded by what remains of the request's deadline.
* :func:`gather` — several such calls concurrently; every call finishes before an error is
  raised, so nothing is left running behind the caller.
* :func:`open_stream` / :func:`call_fresh` — a refused or reset connection drops the pooled
  client and the call is retried once on a fresh one (a downstream that just restarted is
  reached at once, not after gRPC's reconnect backoff).
* :class:`ReplicaFeed` — one channel group of one slice: the batches of the replica the
  policy names, resumed after the last delivered batch on every failover. Its open deadline
  (first batch within ``open_timeout``) and idle deadline are watched by the service's one
  :class:`~router.timers.Timer`; the request's token cancels the read in progress. It is a
  plain iterator: the serving thread reads it itself (one group) or a
  :class:`~router.readahead.ReadAhead` does.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Executor, Future, wait
from typing import TypeVar

import pyarrow as pa
import structlog

from router.context import RequestContext
from router.downstream import BatchStream, Call, Downstream, DownstreamPool
from router.errors import (
    ArrakisError,
    InternalError,
    TimedOutError,
    all_replicas_failed,
)
from router.protocol.gps import NS
from router.replicas import (
    RETRY_BACKOFF_S,
    Attempt,
    DataEnds,
    EndedEarlyError,
    GiveUp,
    Outcome,
    is_connection_fault,
    is_retryable,
    next_step,
)
from router.timers import Timer, TimerHandle

T = TypeVar("T")
log = structlog.get_logger("router.fanout")


def seconds(t: int | None) -> str:
    """GPS ns as seconds text (``now`` for None)."""
    if t is None:
        return "now"
    whole, frac = divmod(t, NS)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".")


def bounded_call(call: Call, ctx: RequestContext) -> Call:
    """``call`` with its timeout capped by what remains of the request's deadline."""
    ctx.check(call.what)
    limit = ctx.limit(call.timeout)
    if limit is not None and limit <= 0:
        raise TimedOutError(f"{call.what}: the request deadline passed")
    return call if limit == call.timeout else dataclasses.replace(call, timeout=limit)


def call_fresh(pool: DownstreamPool, url: str, op: Callable[[Downstream], T]) -> T:
    """``op(pool.get(url))``; on a refused or reset connection, once more on a fresh client."""
    member = pool.get(url)
    try:
        return op(member)
    except ArrakisError as exc:
        if not is_connection_fault(exc):
            raise
        log.info("downstream_reconnect", endpoint=url, error=str(exc)[:200])
        pool.discard(url, member)
    return op(pool.get(url))


def open_stream(pool: DownstreamPool, url: str, command: bytes, call: Call) -> BatchStream:
    return call_fresh(pool, url, lambda d: d.stream(command, call))


def fetch_first(
    pool: DownstreamPool,
    endpoints: Sequence[str],
    command: bytes,
    call: Call,
    ctx: RequestContext | None = None,
) -> tuple[str, list[pa.RecordBatch]]:
    """``(url, batches)`` from the first replica of ``endpoints`` that answers; each call gets
    at most what remains of ``ctx``'s deadline."""
    errors: list[ArrakisError] = []
    for url in endpoints:
        bounded = bounded_call(call, ctx) if ctx is not None else call

        def fetch(member: Downstream, bounded: Call = bounded) -> list[pa.RecordBatch]:
            return member.fetch(command, bounded)

        try:
            return url, call_fresh(pool, url, fetch)
        except ArrakisError as exc:
            errors.append(exc)
            log.warning("downstream_failed", endpoint=url, what=call.what, error=str(exc))
            if not is_retryable(exc):
                break
    if not errors:
        raise InternalError(f"{call.what}: no endpoint to ask")
    raise all_replicas_failed(call.what, errors)


def gather(executor: Executor, calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` concurrently; results in order, or the first error once all are done."""
    if len(calls) == 1:
        return [calls[0]()]
    futures: list[Future[T]] = [executor.submit(c) for c in calls]
    wait(futures)
    for f in futures:
        exc = f.exception()
        if exc is not None:
            raise exc
    return [f.result() for f in futures]


class _Watch:
    """The open / idle deadline of one attempt, on the shared timer: the first batch within
    ``first`` s of the open, then each next one within ``idle`` s. The clock runs only while
    the feed waits for the downstream, not while its consumer holds a batch.

    Batches arriving during one long read (``read_many``) are seen through the stream's
    ``received`` count when the watch looks: progress is then dated at that look, so a
    silence is noticed within ``idle`` to ``2 x idle`` s of the last batch."""

    def __init__(
        self, feed: ReplicaFeed, stream: BatchStream, url: str, first: float, idle: float
    ) -> None:
        self.feed = feed
        self.stream = stream
        self.url = url
        self.first = first
        self.idle = idle
        self.fired: str | None = None
        self._lock = threading.Lock()
        self._done = False
        self._seen = 0  # the stream's received count at the last look
        # first look when either limit could have passed (a first batch may come early)
        self._handle: TimerHandle = feed.timer.call_later(min(first, idle), self._check)

    def _check(self) -> None:
        feed = self.feed
        with self._lock:
            if self._done:
                return
            now = feed.timer.monotonic()
            received = self.stream.received
            started = feed.attempt_delivered or received
            limit = self.idle if started else self.first
            if not feed.reading:  # the consumer holds a batch: not the downstream's fault
                self._handle = feed.timer.call_at(now + limit, self._check)
                return
            if received > feed.attempt_delivered and received != self._seen:
                # batches came within the read in progress (not delivered yet)
                self._seen = received
                self._handle = feed.timer.call_at(now + limit, self._check)
                return
            due = feed.progress + limit
            if now < due:
                # no batch yet: look again when the idle limit could apply, if sooner
                soon = due if started else min(due, now + self.idle)
                self._handle = feed.timer.call_at(soon, self._check)
                return
            self.fired = (
                f"no data for {limit:g} s"
                if started
                else f"the stream did not start within {limit:g} s"
            )
        log.warning(
            "downstream_idle",
            endpoint=self.url,
            slice=feed.label,
            request_id=feed.ctx.request_id,
            reason=self.fired,
        )
        self.stream.cancel()

    def stop(self) -> None:
        with self._lock:
            self._done = True
            self._handle.cancel()


class ReplicaFeed:
    """One channel group over ``[start, end)`` (``end`` None: open-ended), failing over
    between ``endpoints`` as :func:`router.replicas.next_step` says. Iterate once.

    ``command_for(resume)`` builds the downstream command; ``resume`` is ``None`` for the
    first attempt, else the time after the last batch delivered (``batch_end``).
    """

    def __init__(
        self,
        pool: DownstreamPool,
        ctx: RequestContext,
        endpoints: Sequence[str],
        command_for: Callable[[int | None], bytes],
        call: Call,
        *,
        start: int | None,
        end: int | None,
        batch_end: Callable[[pa.RecordBatch], int | None],
        timer: Timer,
        open_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        retry_backoff: float = RETRY_BACKOFF_S,
        label: str = "",
    ) -> None:
        self.endpoints = tuple(endpoints)
        self.pool = pool
        self.ctx = ctx
        self.timer = timer
        self.label = label
        self.start = start
        self.end = end
        self._command_for = command_for
        self._call = call
        self._batch_end = batch_end
        self._open_timeout = open_timeout
        self._idle_timeout = idle_timeout
        self._retry_backoff = retry_backoff
        self._lock = threading.Lock()
        self._current: BatchStream | None = None
        self.url: str | None = None
        self._last: pa.RecordBatch | None = None  # last batch delivered (for ``resume``)
        self._resume: int | None = None
        self._closed = False
        # read by the watch (another thread): plain attributes, written per batch
        self.reading = False
        self.progress = timer.monotonic()
        self.attempt_delivered = 0
        self.delivered = 0
        self.outcomes: list[Outcome] = []
        self._runs: Generator[Sequence[pa.RecordBatch], int, None] | None = None
        self._stopped = False
        self._want = 1  # rows the consumer asked for (take)
        self._failure: Exception | None = None  # raised by the next take

    def __repr__(self) -> str:
        return (
            f"<ReplicaFeed {self.label} endpoint={self.url} delivered={self.delivered} "
            f"failures={len(self.outcomes)} closed={self._closed}>"
        )

    @property
    def resume(self) -> int | None:
        """Where a replica resumes: the time after the last batch delivered (computed when
        asked, not per batch)."""
        last, self._last = self._last, None
        if last is not None:
            end = self._batch_end(last)
            if end is not None:
                self._resume = end
        return self._resume

    def delivered_to(self) -> int | None:
        """The time up to which data was delivered (the start when nothing was)."""
        resume = self.resume
        return resume if resume is not None else self.start

    def cancel(self) -> None:
        """Stop: cancel the downstream read in progress (any thread; idempotent)."""
        self._closed = True
        with self._lock:
            current = self._current
        if current is not None:
            current.cancel()

    def __iter__(self) -> Generator[pa.RecordBatch, None, None]:
        """The stream row by row: :meth:`take` one row at a time (closing the iterator
        stops the reading)."""
        try:
            while batches := self.take(1):
                yield from batches
        finally:
            self.stop_reading()

    def take(self, limit: int) -> Sequence[pa.RecordBatch]:
        """The next ``limit`` batches, fewer only at the end ([] once ended), across
        failovers as iterating does. The consumer says how many it wants, so a downstream
        that keeps its stream open past the rows still missing is not waited for; a
        downstream's batches come in one read (router.downstream.FlightStream.read_many),
        not one Python call per row."""
        failure, self._failure = self._failure, None
        if failure is not None:
            raise failure
        runs = self._runs
        if runs is None:
            if self._stopped:
                return []
            runs = self._runs = self._read()
            next(runs)  # to the first yield
        batches: Sequence[pa.RecordBatch] = []
        try:
            while len(batches) < limit:  # fewer: an attempt ended, its replica goes on
                more = runs.send(limit - len(batches))
                # one read's rows as read_rows gave them (Rows: no Python object per row);
                # joined into a list only across attempts
                batches = more if not batches else [*batches, *more]
        except StopIteration:
            self.stop_reading()
        except Exception as exc:
            if not batches:
                raise
            # the rows delivered before it go out first, as when iterating row by row
            self._failure = exc
        return batches

    def stop_reading(self) -> None:
        """End the reading (the attempt in progress closes its downstream); idempotent."""
        self._stopped = True
        runs, self._runs = self._runs, None
        if runs is not None:
            runs.close()

    def _read(self) -> Generator[Sequence[pa.RecordBatch], int, None]:
        self._want = yield []
        ctx = self.ctx
        while True:
            step = next_step(self.endpoints, self.outcomes, self._retry_backoff)
            if isinstance(step, GiveUp):
                raise self._give_up(step)
            if isinstance(step, DataEnds):
                log.warning(
                    "downstream_data_ends",
                    endpoints=[o.url for o in self.outcomes],
                    slice=self.label,
                    at=seconds(step.at),
                    request_id=ctx.request_id,
                )
                return
            assert isinstance(step, Attempt)
            if step.delay:
                log.info(
                    "downstream_retry", endpoint=step.url, slice=self.label, delay_s=step.delay
                )
                if ctx.token.wait(step.delay):
                    raise ctx.error(f"Stream {self.label}")
            if self._closed:
                return
            ctx.check(f"Stream {self.label}")
            before = self.delivered
            try:
                yield from self._read_one(step.url)
                return
            except ArrakisError as exc:
                if self._closed:
                    return
                if ctx.cancelled:
                    raise ctx.error(f"Stream {self.label}") from None
                self.outcomes.append(Outcome(step.url, self.delivered - before, exc))
                log.warning(
                    "downstream_failed",
                    endpoint=step.url,
                    slice=self.label,
                    delivered_to=seconds(self.delivered_to()),
                    error=str(exc)[:500],
                    request_id=ctx.request_id,
                )

    def _give_up(self, step: GiveUp) -> ArrakisError:
        at = seconds(self.delivered_to())
        error = all_replicas_failed(f"Stream {self.label}", step.errors)
        text = f"{error.message} (data delivered up to {at} GPS s)"
        out = type(error).__new__(type(error))
        ArrakisError.__init__(out, text)
        for key, value in vars(error).items():
            if key != "message":
                setattr(out, key, value)
        return out

    def _read_one(self, url: str) -> Generator[Sequence[pa.RecordBatch], int, None]:
        """Yield the stream from ``url`` resuming at ``self.resume``; returns when it reached
        the end (or the feed was closed), raises the translated fault otherwise (an early
        end included)."""
        resume = self.resume
        if resume is not None:
            log.info("downstream_resume", endpoint=url, slice=self.label, resume=seconds(resume))
        call = bounded_call(self._call, self.ctx)
        open_limit = self.ctx.limit(self._open_timeout) or self._open_timeout
        call = dataclasses.replace(call, timeout=min(call.timeout or open_limit, open_limit))
        self.attempt_delivered = 0
        self.progress = self.timer.monotonic()
        self.reading = True
        stream = open_stream(self.pool, url, self._command_for(resume), call)
        with self._lock:
            self._current, self.url = stream, url
        unregister = self.ctx.token.on_cancel(stream.cancel)
        watch = _Watch(self, stream, url, open_limit, self._idle_timeout)
        try:
            if self._closed:
                return
            monotonic = self.timer.monotonic
            read = stream.read_many
            while batches := read(self._want):
                self.reading = False
                # taken before the hand-over: the native output stage empties a Rows it sends
                last, count = batches[-1], len(batches)
                self._want = yield batches
                self._last = last
                self.delivered += count
                self.attempt_delivered += count
                if self._closed:
                    return
                self.progress = monotonic()
                self.reading = True
            self.reading = False
            watch.stop()
            if watch.fired is not None:
                self.pool.report(url, "timed_out")  # the transport saw only a cancel
                raise TimedOutError(f"DoGet {self.label} on {url}: {watch.fired}")
            if self._closed:
                return
            self.ctx.check(f"Stream {self.label}")
            if self.end is not None:
                at = self.delivered_to()
                if at is None or at < self.end:
                    self.pool.report(url, "early_end")
                    raise EndedEarlyError(
                        f"DoGet {self.label} on {url}: the stream ended at {seconds(at)} GPS s, "
                        f"before the slice's end {seconds(self.end)}",
                        at,
                    )
        finally:
            self.reading = False
            watch.stop()
            unregister()
            with self._lock:
                self._current = None
            stream.close()
