"""The health seam on the downstream pool: every call through it is counted in flight,
timed, and its outcome recorded in the :class:`~router.healthregistry.HealthRegistry`.

:class:`HealthPool` is a :class:`~router.downstream.DownstreamPool` whose ``get(url)``
hands out the inner pool's member wrapped in a :class:`GuardedDownstream`; fan-out, stream
execution and metadata code keep calling ``pool.get(url).fetch/stream/action/exchange``
and never see the difference.

Outcome rule (the same one failover uses, :func:`router.errors.is_retryable`): a failure a
replica might not have (unavailable, deadline, transport garbage) counts against the
endpoint; any other answer, even an application error, proves it alive; a cancelled call
says nothing. Over the in-flight cap a call fails at once with a retryable
``UnavailableError`` (so the caller moves to the next replica) and is not held against the
endpoint: the breaker is ours, not its fault.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import pyarrow as pa
from prometheus_client import CollectorRegistry, Histogram

from router.downstream import BatchStream, Call, Downstream, DownstreamPool
from router.errors import (
    ArrakisError,
    CancelledError,
    InternalError,
    TimedOutError,
    UnavailableError,
    is_retryable,
)
from router.healthregistry import HealthRegistry

__all__ = ["CALL_BUCKETS", "GuardedDownstream", "HealthPool", "call_histogram", "failure_kind"]

T = TypeVar("T")

# Downstream calls: a local Describe takes about a millisecond, a deadline is seconds.
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# (endpoint, call kind, outcome, seconds) -> None
LatencySink = Callable[[str, str, str, float], None]


def call_histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram(
        "arrakis_router_downstream_call_seconds",
        "Downstream call latency (a stream: until it is open) by endpoint, call and outcome",
        ["endpoint", "call", "outcome"],
        buckets=CALL_BUCKETS,
        registry=registry,
    )


def failure_kind(exc: BaseException | None) -> str | None:
    """How a call that ended with ``exc`` counts: None when the endpoint answered (or the
    call was cancelled), else the failure kind recorded against it."""
    if exc is None or not isinstance(exc, ArrakisError) or isinstance(exc, CancelledError):
        return None
    if not is_retryable(exc):
        return None
    if isinstance(exc, TimedOutError):
        return "timed_out"
    if isinstance(exc, InternalError):
        return "internal"
    return "unavailable"


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, CancelledError):
        return "cancelled"
    return failure_kind(exc) or "answered_error"


class GuardedDownstream:
    """One downstream behind the registry's in-flight cap, with its outcomes recorded."""

    def __init__(
        self, inner: Downstream, registry: HealthRegistry, latency: LatencySink | None = None
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self._registry = registry
        self._latency = latency

    def __repr__(self) -> str:
        return f"<GuardedDownstream {self.url} in_flight={self._registry.in_flight(self.url)}>"

    def _acquire(self, what: str) -> None:
        if not self._registry.try_acquire(self.url):
            raise UnavailableError(
                f"{what} on {self.url}: at its cap of calls in flight "
                f"(--max-downstream-calls {self._registry.max_calls}); not queued"
            )

    def _record(self, kind: str, started: float, exc: BaseException | None) -> None:
        if self._latency is not None:
            self._latency(self.url, kind, _outcome(exc), time.monotonic() - started)
        if isinstance(exc, CancelledError):
            return
        failure = failure_kind(exc)
        if failure is None:
            self._registry.record_success(self.url)
        else:
            self._registry.record_failure(self.url, failure)

    def _unary(self, kind: str, what: str, run: Callable[[], T]) -> T:
        self._acquire(what)
        started = time.monotonic()
        try:
            result = run()
        except BaseException as exc:
            self._record(kind, started, exc)
            raise
        finally:
            self._registry.release(self.url)
        self._record(kind, started, None)
        return result

    def fetch(self, command: bytes, call: Call) -> list[pa.RecordBatch]:
        return self._unary("fetch", call.what or "fetch", lambda: self.inner.fetch(command, call))

    def action(self, kind: str, call: Call) -> list[bytes]:
        return self._unary("action", kind, lambda: self.inner.action(kind, call))

    def exchange(
        self, command: bytes, batches: Sequence[pa.RecordBatch], call: Call
    ) -> list[pa.RecordBatch]:
        return self._unary(
            "exchange", call.what or "exchange", lambda: self.inner.exchange(command, batches, call)
        )

    def stream(self, command: bytes, call: Call) -> BatchStream:
        """The slot is held while the stream is open and released when it ends or closes."""
        self._acquire(call.what or "stream")
        started = time.monotonic()
        try:
            stream = self.inner.stream(command, call)
        except BaseException as exc:
            self._registry.release(self.url)
            self._record("stream_open", started, exc)
            raise
        self._record("stream_open", started, None)
        return GuardedStream(stream, self)

    def close(self) -> None:
        self.inner.close()


class GuardedStream:
    """A downstream stream that gives its in-flight slot back once, on end or close, and
    records how its reading ended (a reset mid-stream counts against the endpoint)."""

    def __init__(self, inner: BatchStream, owner: GuardedDownstream) -> None:
        self._inner = inner
        self._owner = owner
        self._released = False

    def __repr__(self) -> str:
        return f"<GuardedStream {self._inner!r} released={self._released}>"

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._owner._registry.release(self._owner.url)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self._inner
        except BaseException as exc:
            self._failed(exc)
            raise
        finally:
            self._release()

    def read_many(self, limit: int) -> Sequence[pa.RecordBatch]:
        try:
            batches = self._inner.read_many(limit)
        except BaseException as exc:
            self._failed(exc)
            self._release()
            raise
        if not batches:
            self._release()
        return batches

    @property
    def received(self) -> int:
        return self._inner.received

    def _failed(self, exc: BaseException) -> None:
        failure = failure_kind(exc)
        if failure is not None:
            self._owner._registry.record_failure(self._owner.url, failure)

    def cancel(self) -> None:
        self._inner.cancel()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._release()


class HealthPool(DownstreamPool):
    """``inner``'s members, guarded (see the module docstring)."""

    def __init__(
        self,
        inner: DownstreamPool,
        registry: HealthRegistry,
        latency: Histogram | None = None,
    ) -> None:
        super().__init__(inner.tls_root_certs, inner.window)
        self.inner = inner
        self.calls = inner.calls  # the open calls are the inner pool's members'
        self.registry = registry
        self._sink: LatencySink | None = None
        if latency is not None:
            histogram = latency

            def sink(endpoint: str, kind: str, outcome: str, seconds: float) -> None:
                histogram.labels(endpoint, kind, outcome).observe(seconds)

            self._sink = sink

    def __repr__(self) -> str:
        return f"<HealthPool {self.inner!r}>"

    def get(self, url: str) -> Downstream:
        return GuardedDownstream(self.inner.get(url), self.registry, self._sink)

    def report(self, url: str, kind: str) -> None:
        self.registry.record_failure(url, kind)

    def discard(self, url: str, member: Downstream) -> None:
        inner = member.inner if isinstance(member, GuardedDownstream) else member
        self.inner.discard(url, inner)

    def retain(self, urls: set[str]) -> None:
        self.inner.retain(urls)

    def close(self) -> None:
        self.inner.close()
