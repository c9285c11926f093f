"""Fan-out: running downstream calls for one request, with replica failover.

* :func:`fetch_first` — a unary metadata call on the first replica that answers.
* :func:`gather` — several such calls concurrently; every call finishes before an error is
  raised, so nothing is left running behind the caller.
* :class:`GroupFeed` — one channel group of one stream slice, read by a producer thread into
  a bounded queue (a fast downstream cannot fill memory); on a retryable failure or an idle
  timeout it fails over to the next replica, resuming after the last batch delivered.
  The consumer's iteration polls ``should_stop`` (the client cancelled) and the idle clock;
  ``close()`` cancels the downstream call and joins the thread, on every path.
  ``inline=True``: the consumer's own thread reads the downstream (no per-batch hand-over
  between threads); a watchdog thread, waking every ``poll`` seconds, only cancels a read
  that stays idle too long or that the client no longer wants.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Executor, Future, wait
from typing import TypeVar

import pyarrow as pa
import structlog

from router.downstream import BatchStream, Call, DownstreamPool
from router.errors import (
    ArrakisError,
    CancelledError,
    InternalError,
    TimedOutError,
    all_replicas_failed,
    is_retryable,
)

T = TypeVar("T")
log = structlog.get_logger("router.fanout")

_END = object()
END = object()  # what :meth:`GroupFeed.poll` returns once the stream has finished


def fetch_first(
    pool: DownstreamPool, endpoints: Sequence[str], command: bytes, call: Call
) -> tuple[str, list[pa.RecordBatch]]:
    """``(url, batches)`` from the first replica of ``endpoints`` that answers."""
    errors: list[ArrakisError] = []
    for url in endpoints:
        try:
            return url, pool.get(url).fetch(command, call)
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


class GroupFeed:
    """Batches of one channel group of one slice, read ahead by a producer thread (or, with
    ``inline=True``, read by the consumer's thread itself: see the module docstring).

    ``command_for(resume)`` builds the downstream command; ``resume`` is ``None`` for the
    first attempt, else the time after the last batch delivered (``batch_end``).
    """

    def __init__(
        self,
        pool: DownstreamPool,
        endpoints: Sequence[str],
        command_for: Callable[[int | None], bytes],
        call: Call,
        *,
        batch_end: Callable[[pa.RecordBatch], int | None],
        should_stop: Callable[[], bool] = lambda: False,
        idle_timeout: float = 30.0,
        queue_size: int = 16,
        poll: float = 0.05,
        monotonic: Callable[[], float] = time.monotonic,
        label: str = "",
        notify: threading.Event | None = None,
        inline: bool = False,
    ) -> None:
        self.endpoints = tuple(endpoints)
        self._notify = notify
        self.label = label
        self.inline = inline
        self._pool = pool
        self._command_for = command_for
        self._call = call
        self._batch_end = batch_end
        self._should_stop = should_stop
        self._idle_timeout = idle_timeout
        self._poll = poll
        self._monotonic = monotonic
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._stopped = False  # == self._stop.is_set(), read without a call per batch
        self._idle = threading.Event()
        self.client_left = False  # inline: the watchdog saw the client cancel
        self._lock = threading.Lock()
        self._current: BatchStream | None = None
        self._current_url: str | None = None
        self._progress = monotonic()
        self._reading = False  # a downstream read is in progress (the idle clock runs)
        self._last: pa.RecordBatch | None = None  # last batch delivered (for ``resume``)
        self._resume: int | None = None
        target = self._watch if inline else self._produce
        self._thread = threading.Thread(target=target, name=f"feed {label}", daemon=True)
        self._started = False
        self.delivered = 0

    def __repr__(self) -> str:
        return (
            f"<GroupFeed {self.label} endpoint={self._current_url} delivered={self.delivered} "
            f"queued={self._queue.qsize()} inline={self.inline} stopped={self._stop.is_set()}>"
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

    # ------------------------------------------------------------------ consumer side
    def start(self) -> GroupFeed:
        if not self._started:
            self._started = True
            self._progress = self._monotonic()
            self._thread.start()
        return self

    def __iter__(self) -> Generator[pa.RecordBatch, None, None]:
        self.start()
        return self._inline() if self.inline else self._queued()

    def _queued(self) -> Generator[pa.RecordBatch, None, None]:
        while True:
            if self._should_stop():
                raise CancelledError(f"{self.label}: the client cancelled the stream")
            try:
                item = self._queue.get(timeout=self._poll)
            except queue.Empty:
                self._check_idle()
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, pa.RecordBatch)
            yield item

    def _inline(self) -> Generator[pa.RecordBatch, None, None]:
        if self._should_stop():
            raise CancelledError(f"{self.label}: the client cancelled the stream")
        yield from self._attempts()
        if self.client_left:
            raise CancelledError(f"{self.label}: the client cancelled the stream")

    def poll(self) -> object | None:
        """Non-blocking consumer side (the live merge reads several feeds in one thread):
        the next batch, :data:`END`, an error to raise, or ``None`` when nothing is queued.
        ``notify`` (given at construction) is set whenever something is queued."""
        self.start()
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            self._check_idle()
            return None
        return END if item is _END else item

    def _check_idle(self) -> None:
        if not self._reading or self._monotonic() - self._progress <= self._idle_timeout:
            return
        with self._lock:
            current = self._current
            if current is None or self._idle.is_set():
                return
            self._idle.set()
        log.warning(
            "downstream_idle",
            endpoint=self._current_url,
            slice=self.label,
            idle_timeout=self._idle_timeout,
        )
        current.cancel()

    def _cancel_current(self) -> None:
        with self._lock:
            current = self._current
        if current is not None:
            current.cancel()

    def close(self) -> None:
        """Stop the producer, cancel its downstream call and wait for it (idempotent)."""
        self._stopped = True
        self._stop.set()
        self._cancel_current()
        if self._started and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                # the downstream call ignored its cancellation: say so rather than hide it
                log.error(
                    "feed_thread_stuck", slice=self.label, endpoint=self._current_url, waited_s=10
                )

    def __enter__(self) -> GroupFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ producer side
    def _watch(self) -> None:
        """Inline mode: cancel a read the client no longer wants or that stays idle."""
        while not self._stop.wait(self._poll):
            if self._should_stop():
                self.client_left = True
                self._cancel_current()
                return
            self._check_idle()

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=self._poll)
                self._progress = self._monotonic()
                if self._notify is not None:
                    self._notify.set()
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        batches = self._attempts()
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(_END)
        except Exception as exc:
            self._put(exc)
        finally:
            batches.close()

    def _attempts(self) -> Generator[pa.RecordBatch, None, None]:
        """The group's batches, failing over between replicas; raises when all failed."""
        errors: list[ArrakisError] = []
        for url in self.endpoints:
            if self._stop.is_set():
                return
            try:
                finished = yield from self._read_one(url)
            except ArrakisError as exc:
                error: ArrakisError = exc
            else:
                if finished:
                    return
                error = TimedOutError(
                    f"DoGet {self.label} on {url}: no data for {self._idle_timeout:g} s"
                )
                self._pool.report(url, "timed_out")
            if self._stop.is_set():
                return
            errors.append(error)
            log.warning("downstream_failed", endpoint=url, slice=self.label, error=str(error))
            if not is_retryable(error):
                break
        raise all_replicas_failed(f"DoGet {self.label}", errors)

    def _read_one(self, url: str) -> Generator[pa.RecordBatch, None, bool]:
        """Yield the stream from ``url`` (resuming at ``self.resume``); return True: finished
        (or stopped), False: the idle timeout fired. Raises the translated downstream error.
        The idle clock runs only while waiting for the downstream, not while the consumer
        holds a batch."""
        self._progress = self._monotonic()
        resume = self.resume
        if resume is not None:
            log.info("downstream_resume", endpoint=url, slice=self.label, resume=resume)
        stream = self._pool.get(url).stream(self._command_for(resume), self._call)
        with self._lock:
            self._current, self._current_url = stream, url
        try:
            if self._stop.is_set():
                return True
            monotonic = self._monotonic
            self._reading = True
            # No Python function call per batch on this path (see router.server.guarded)
            for batch in stream:
                self._reading = False
                yield batch
                self._last = batch
                self.delivered += 1
                if self._stopped:
                    return True
                self._progress = monotonic()
                self._reading = True
            self._reading = False
            if self._idle.is_set() and not self._stop.is_set():
                self._idle.clear()
                return False
            return True
        finally:
            self._reading = False
            with self._lock:
                self._current, self._current_url = None, None
            stream.close()
