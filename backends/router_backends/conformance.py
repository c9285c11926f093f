"""The conformance kit: does a backend speak the protocol behind the server core?

    from router_backends.conformance import check_backend

    def test_my_backend_conforms(tmp_path):
        check_backend(MyBackend(tmp_path), start_ns=..., end_ns=...).assert_ok()

:func:`check_backend` serves the backend in this process (loopback, port 0, always
stopped), runs every check below against the backend directly and over Flight, and returns
a :class:`Report`; ``assert_ok()`` raises :class:`ConformanceError` listing each failed
check, what was expected and what the backend did.

========================  ==============================================================
check                     what must hold
========================  ==============================================================
``metadata``              Find answers well-formed channels (``DOMAIN:NAME``, a known
                          data type, a positive rate, a stride holding whole samples);
                          Count = len(Find); Describe answers the same metadata in request
                          order; Find's pattern selects a channel; scopes cover the domains
``error classes``         an unknown channel is ``FlightUnavailableError`` naming it, in
                          Describe and in a Stream's GetFlightInfo (never INTERNAL)
``block alignment``       a stream from an unaligned start has the lcm block duration, the
                          schema of its metadata, blocks from ``floor(start / D) * D`` on
                          the grid without holes up to ``end``, full-length lists; the same
                          number of blocks arrive over Flight
``retention refusal``     a stream outside the server's retention is refused with
                          ``FlightUnavailableError`` before the backend streams anything
``cancellation``          after the client cancels, the backend's blocks are closed
``live pacing``           a live stream (start null) releases each block after its end;
                          a backend without live data refuses it with
                          ``FlightUnavailableError`` (``live=True`` demands it is served)
========================  ==============================================================
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight

from router.protocol.arrow import DTYPES, metas_from_batches, stream_schema
from router.protocol.blocks import block_duration, samples_per_block
from router.protocol.channel import ChannelMeta, split_channel_name
from router.protocol.envelope import DescribeArgs, Envelope, FindArgs, StreamArgs
from router.protocol.errors import UnavailableError
from router.protocol.gps import Clock, SystemClock
from router_backends.faults import FaultyBackend
from router_backends.interface import Backend, BlockStream, CallContext
from router_backends.retention import Retention
from router_backends.server import BackendServer

__all__ = ["CHECKS", "ConformanceError", "Outcome", "Report", "check_backend"]

NS = 1_000_000_000
UNKNOWN = "X0:CONFORMANCE-NO_SUCH_CHANNEL"


class ConformanceError(AssertionError):
    """A backend failed the kit; the message lists every failed check."""


class Failed(Exception):
    """One check failed (the message says what was expected and what happened)."""


@dataclass(frozen=True)
class Outcome:
    check: str
    ok: bool
    detail: str


@dataclass
class Report:
    backend: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def format(self) -> str:
        lines = [f"backend {self.backend!r}: {len(self.failures())} of {len(self.outcomes)} failed"]
        for o in self.outcomes:
            lines.append(f"  [{'ok' if o.ok else 'FAILED'}] {o.check}: {o.detail}")
        return "\n".join(lines)

    def assert_ok(self) -> None:
        if not self.ok:
            raise ConformanceError(self.format())


class _Watched(FaultyBackend):
    """The backend under test, noting which streams it opened and whether they were closed."""

    def __init__(self, backend: Backend) -> None:
        from router_backends.faults import FaultPlan

        super().__init__(backend, FaultPlan())
        self.opened = 0
        self.closed = 0
        self._lock = threading.Lock()

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = self.backend.stream(args, ctx)
        with self._lock:
            self.opened += 1

        def watched() -> Iterator[pa.RecordBatch]:
            try:
                yield from inner.blocks
            finally:
                with self._lock:
                    self.closed += 1

        return replace(inner, blocks=watched())

    def close(self) -> None:
        """The kit's servers never close the backend under test (its owner does)."""


@dataclass
class _Kit:
    backend: _Watched
    client: flight.FlightClient
    ctx: CallContext
    clock: Clock
    start_ns: int
    end_ns: int
    channels: list[ChannelMeta]
    live: bool | None
    options: flight.FlightCallOptions
    cancel_timeout_s: float

    def get(self, env: Envelope) -> pa.Table:
        info = self.client.get_flight_info(
            flight.FlightDescriptor.for_command(env.encode()), self.options
        )
        tables = [self.client.do_get(ep.ticket, self.options).read_all() for ep in info.endpoints]
        return pa.concat_tables(tables)


def _metadata(kit: _Kit) -> str:
    found = list(kit.backend.find(FindArgs(), kit.ctx))
    if not found:
        raise Failed("Find with no filter answered no channels")
    for m in found:
        if not isinstance(m, ChannelMeta):
            raise Failed(f"Find answered {type(m).__name__}, not ChannelMeta")
        try:
            split_channel_name(m.name)
        except ValueError:
            raise Failed(f"channel name {m.name!r} has no ':' (expected DOMAIN:NAME)") from None
        if m.data_type not in DTYPES:
            raise Failed(f"{m.name}: data_type {m.data_type!r} is not one of {sorted(DTYPES)}")
        if not isinstance(m.sample_rate, int) or m.sample_rate <= 0:
            raise Failed(f"{m.name}: sample_rate {m.sample_rate!r} is not a positive int")
        if not m.stride or m.stride <= 0:
            raise Failed(f"{m.name}: stride {m.stride!r} is not a positive number of ns")
        try:
            samples_per_block(m.sample_rate, m.stride)
        except ValueError as exc:
            raise Failed(f"{m.name}: {exc}") from None
    count = kit.backend.count(FindArgs(), kit.ctx)
    if count != len(found):
        raise Failed(f"Count answered {count}, Find {len(found)} channels")
    names = [m.name for m in kit.channels]
    described = list(kit.backend.describe(DescribeArgs(tuple(reversed(names))), kit.ctx))
    if [m.name for m in described] != list(reversed(names)):
        raise Failed(f"Describe {list(reversed(names))} answered {[m.name for m in described]}")
    by_name = {m.name: m for m in found}
    for m in described:
        if by_name.get(m.name) != m:
            raise Failed(f"Describe and Find disagree on {m.name}: {m} vs {by_name.get(m.name)}")
    one = names[0]
    picked = [m.name for m in kit.backend.find(FindArgs(pattern=re.escape(one) + "$"), kit.ctx)]
    if picked != [one]:
        raise Failed(f"Find pattern {re.escape(one) + '$'!r} answered {picked[:5]}, not [{one!r}]")
    scopes = kit.backend.scopes()
    uncovered = sorted({m.domain for m in found} - set(scopes))
    if uncovered:
        raise Failed(f"scopes() {sorted(scopes)} miss the domains {uncovered}")
    wire = metas_from_batches(kit.get(Envelope("Describe", DescribeArgs((one,)))).to_batches())
    if wire != [by_name[one]]:
        raise Failed(f"Describe over Flight answered {wire}, not {[by_name[one]]}")
    return f"{len(found)} channels, {len(scopes)} domain(s)"


def _expect_unavailable(what: str, call: Callable[[], object], name: str) -> None:
    try:
        call()
    except flight.FlightUnavailableError as exc:
        if name not in str(exc):
            raise Failed(f"{what}: the error does not name {name}: {exc}") from None
        return
    except flight.FlightError as exc:
        raise Failed(
            f"{what}: expected FlightUnavailableError naming the channel, got "
            f"{type(exc).__name__}: {str(exc)[:300]} (raise ChannelsNotAvailableError)"
        ) from None
    raise Failed(f"{what}: answered, expected FlightUnavailableError")


def _error_classes(kit: _Kit) -> str:
    _expect_unavailable(
        "Describe of an unknown channel",
        lambda: kit.get(Envelope("Describe", DescribeArgs((UNKNOWN,)))),
        UNKNOWN,
    )
    stream = Envelope("Stream", StreamArgs((UNKNOWN,), kit.start_ns, kit.end_ns))
    _expect_unavailable(
        "Stream of an unknown channel",
        lambda: kit.client.get_flight_info(
            flight.FlightDescriptor.for_command(stream.encode()), kit.options
        ),
        UNKNOWN,
    )
    return "unknown channels: FlightUnavailableError"


def _alignment(kit: _Kit) -> str:
    metas = kit.channels
    d = block_duration(m.stride or 0 for m in metas)
    start = kit.start_ns + d // 2 if kit.start_ns + d // 2 < kit.end_ns else kit.start_ns
    args = StreamArgs(tuple(m.name for m in metas), start, kit.end_ns)
    stream = kit.backend.backend.stream(args, kit.ctx)
    try:
        if stream.block_ns != d:
            raise Failed(f"block_ns is {stream.block_ns}, the lcm of the strides is {d}")
        if not stream.schema.equals(stream_schema(metas)):
            raise Failed(f"schema {stream.schema} is not stream_schema(metadata)")
        want_t = start // d * d
        lengths = {m.name: samples_per_block(m.sample_rate, d) for m in metas}
        rows = 0
        for chunk in stream.blocks:
            for t in chunk.column(0).to_pylist():
                if t != want_t:
                    raise Failed(
                        f"stream from {start} (D = {d}): expected the block at {want_t}, got "
                        f"{t} (blocks start at floor(start / D) * D, one every D, no holes)"
                    )
                want_t += d
            for name, n in lengths.items():
                got = set(pc.list_value_length(chunk.column(name)).to_pylist())
                if got != {n}:
                    raise Failed(f"{name}: lists of {sorted(got)} samples, a block holds {n}")
            rows += chunk.num_rows
        if want_t < kit.end_ns:
            raise Failed(f"the stream ended at {want_t}, before its end {kit.end_ns}")
    finally:
        if stream.close is not None:
            stream.close()
    wire = kit.get(Envelope("Stream", args))
    if wire.num_rows != rows:
        raise Failed(f"over Flight {wire.num_rows} blocks arrived, the backend made {rows}")
    return f"{rows} blocks of {d} ns from {start // d * d}"


def _retention(kit: _Kit) -> str:
    window = Retention(0.0, max(1.0, (kit.clock.now_ns() - kit.end_ns) / NS / 2))
    before = kit.backend.opened
    args = StreamArgs(tuple(m.name for m in kit.channels), kit.start_ns, kit.end_ns)
    with _served(kit.backend, kit.clock, retention=window) as url:
        client = flight.connect(url)
        try:
            desc = flight.FlightDescriptor.for_command(Envelope("Stream", args).encode())
            client.get_flight_info(desc, kit.options)
        except flight.FlightUnavailableError as exc:
            if "retention" not in str(exc):
                raise Failed(f"refused, but not for retention: {exc}") from None
        else:
            raise Failed(f"a stream older than the retention {window} was not refused")
        finally:
            client.close()
    if kit.backend.opened != before:
        raise Failed("the backend was asked to stream although retention refused the request")
    return f"refused outside {window.to_json()}"


def _cancellation(kit: _Kit) -> str:
    live = _serves_live(kit)
    start, end = (None, None) if live else (kit.start_ns, kit.end_ns)
    args = StreamArgs(tuple(m.name for m in kit.channels), start, end)
    opened, closed = kit.backend.opened, kit.backend.closed
    reader = kit.client.do_get(flight.Ticket(Envelope("Stream", args).encode()), kit.options)
    reader.read_chunk()
    reader.cancel()
    deadline = time.monotonic() + kit.cancel_timeout_s
    while kit.backend.closed - closed < kit.backend.opened - opened:
        if time.monotonic() > deadline:
            raise Failed(
                f"the backend's blocks were not closed within {kit.cancel_timeout_s:g} s of a "
                "cancel (a backend waiting for data should return when ctx.cancelled())"
            )
        time.sleep(0.02)
    return f"{'live' if live else 'bounded'} stream closed after cancel"


def _serves_live(kit: _Kit) -> bool:
    args = StreamArgs(tuple(m.name for m in kit.channels), None, None)
    desc = flight.FlightDescriptor.for_command(Envelope("Stream", args).encode())
    try:
        kit.client.get_flight_info(desc, kit.options)
    except flight.FlightUnavailableError as exc:
        if kit.live:
            raise Failed(f"live=True, but a live stream was refused: {exc}") from None
        return False
    except flight.FlightError as exc:
        raise Failed(
            f"a live stream was refused with {type(exc).__name__}: {str(exc)[:300]}; a backend "
            "without live data raises UnavailableError"
        ) from None
    if kit.live is False:
        raise Failed("live=False, but a live stream was accepted")
    return True


def _live_pacing(kit: _Kit) -> str:
    if not _serves_live(kit):
        return "live streams are refused with FlightUnavailableError (no live data)"
    args = StreamArgs(tuple(m.name for m in kit.channels), None, None)
    d = block_duration(m.stride or 0 for m in kit.channels)
    slack = d + max([m.max_latency or 0 for m in kit.channels] + [NS])
    asked = kit.clock.now_ns()
    reader = kit.client.do_get(flight.Ticket(Envelope("Stream", args).encode()), kit.options)
    try:
        seen: list[int] = []
        for _ in range(3):
            batch = reader.read_chunk().data
            arrived = kit.clock.now_ns()
            for t in batch.column(0).to_pylist():
                if arrived < t + d:
                    raise Failed(f"block {t} arrived at {arrived}, before its end {t + d}")
                seen.append(t)
        if seen[0] < asked - slack:
            raise Failed(
                f"the live stream began at {seen[0]}, {(asked - seen[0]) / NS:.1f} s before now; "
                "a live stream starts with the block containing now"
            )
        if seen != [seen[0] + i * d for i in range(len(seen))]:
            raise Failed(f"live blocks {seen} are not consecutive blocks of {d} ns")
    finally:
        reader.cancel()
    return f"{len(seen)} live blocks, each after its end"


#: name -> check, in the order they run
CHECKS: dict[str, Callable[[_Kit], str]] = {
    "metadata": _metadata,
    "error classes": _error_classes,
    "block alignment": _alignment,
    "retention refusal": _retention,
    "cancellation": _cancellation,
    "live pacing": _live_pacing,
}


@contextmanager
def _served(backend: Backend, clock: Clock, **kwargs: Any) -> Iterator[str]:
    server = BackendServer(backend, "grpc://127.0.0.1:0", clock=clock, **kwargs)
    try:
        yield server.url
    finally:
        server.shutdown()
        server.wait()


def check_backend(
    backend: Backend,
    *,
    start_ns: int | None = None,
    end_ns: int | None = None,
    channels: Sequence[str] | None = None,
    live: bool | None = None,
    clock: Clock | None = None,
    timeout_s: float = 30.0,
    cancel_timeout_s: float = 10.0,
) -> Report:
    """Run :data:`CHECKS` against ``backend``; ``[start_ns, end_ns)`` must be a span where
    it has data for ``channels`` (default: the hour before now, 4 s; the first three
    channels of Find).  ``live``: True if it must serve live streams, False if it must
    refuse them, None either.  ``timeout_s`` bounds every Flight call, ``cancel_timeout_s``
    the wait for a cancelled stream to be closed.  The backend is not closed."""
    clock = clock or SystemClock()
    if start_ns is None:
        start_ns = (clock.now_ns() - 3600 * NS) // NS * NS
    end_ns = end_ns if end_ns is not None else start_ns + 4 * NS
    watched = _Watched(backend)
    ctx = CallContext.detached(clock, "conformance")
    report = Report(backend.kind)
    try:
        found = list(backend.find(FindArgs(), ctx))
        names = list(channels) if channels else sorted(m.name for m in found)[:3]
        metas = list(backend.describe(DescribeArgs(tuple(names)), ctx))
    except Exception as exc:
        report.outcomes.append(Outcome("metadata", False, f"{type(exc).__name__}: {exc}"))
        return report
    options = flight.FlightCallOptions(timeout=timeout_s)
    with _served(watched, clock) as url:
        client = flight.connect(url)
        try:
            kit = _Kit(
                watched,
                client,
                ctx,
                clock,
                start_ns,
                end_ns,
                metas,
                live,
                options,
                cancel_timeout_s,
            )
            for name, check in CHECKS.items():
                try:
                    report.outcomes.append(Outcome(name, True, check(kit)))
                except (Failed, UnavailableError) as exc:
                    report.outcomes.append(Outcome(name, False, str(exc)))
                except Exception as exc:
                    detail = f"{type(exc).__name__}: {str(exc)[:500]}"
                    report.outcomes.append(Outcome(name, False, detail))
        finally:
            client.close()
    return report
