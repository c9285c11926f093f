"""The Flight adapter: parse → service → translate errors. Nothing else lives here.

Every handler binds the call's request id for logging and maps any exception, including one
raised while a DoGet stream is being iterated, to a Flight error tagged with the request id
(unknown exceptions become FlightInternalError without a traceback). Input never kills the
process.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pyarrow as pa
import pyarrow.flight as flight
import structlog

import scopemap
from router.actions import ACTIONS
from router.admission import client_address
from router.errors import (
    ArrakisError,
    CancelledError,
    InvalidRequestError,
    ReplayError,
    UnimplementedError,
    to_flight_error,
)
from router.inflight import blocks_in
from router.limits import check_size
from router.logging import RepeatFilter, command_summary
from router.memory import IdleTrim
from router.metrics import RouterMetrics, stream_kind
from router.outstream import NATIVE, data_stream, size_of
from router.protocol.auth import (
    AUTHORIZATION_MIDDLEWARE_KEY,
    AuthorizationMiddlewareFactory,
    authorization_from_context,
)
from router.protocol.envelope import StreamArgs
from router.protocol.errors import shorten
from router.protocol.reqid import (
    REQUEST_ID_MIDDLEWARE_KEY,
    RequestIdMiddlewareFactory,
    correlate,
    request_id_from_context,
)
from router.service import RouterService

log = structlog.get_logger("router.server")


def _level(exc: BaseException) -> str:
    if isinstance(exc, CancelledError):
        return "info"  # a client ending its stream is routine (every live stream ends so)
    return "warning" if isinstance(exc, ArrakisError) else "error"


class UntracedError(flight.FlightServerError):  # type: ignore[misc]
    """Works around pyarrow's GetSchema callback (pyarrow 26), the one Flight callback
    without the ``except FlightError`` clause: whatever it raises reaches the client with
    the server's Python traceback appended. pyarrow formats that traceback with
    ``traceback.format_exception`` and, when formatting fails, sends only the exception's
    type name; reading ``__notes__`` fails here on purpose (CPython 3.11/3.12 let that
    propagate), so the client gets our one-line text and no traceback or file path.
    ``tests/integration/test_door.py`` checks it on every run."""

    @property
    def __notes__(self) -> list[str]:
        raise RuntimeError("not formatted: see UntracedError")


def command_of(descriptor: flight.FlightDescriptor) -> bytes:
    """The command of a descriptor (b"" for a path descriptor); each read of pyarrow's
    property copies the bytes, so a handler reads it once."""
    command: bytes = descriptor.command or b""
    return command


def require_command(descriptor: flight.FlightDescriptor, rpc: str) -> None:
    """Path descriptors are not part of the Arrakis protocol."""
    if descriptor.descriptor_type != flight.DescriptorType.CMD:
        raise UnimplementedError(
            f"{rpc}: path descriptors are not supported; send a command descriptor holding "
            "a JSON request (UNIMPLEMENTED)"
        )


class Call:
    """The request id of a call at the edge; :meth:`rebind` moves the call to another id
    (a DoGet adopting the id of the GetFlightInfo that issued its ticket)."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id

    def rebind(self, request_id: str) -> str:
        self.request_id = request_id
        structlog.contextvars.bind_contextvars(request_id=request_id)
        return request_id


def _log_failure(
    exc: BaseException,
    op: str,
    peer: str | None,
    command: bytes | None,
    repeats: RepeatFilter | None,
) -> None:
    """One bounded line per failed call; identical failures from one peer collapsed."""
    text = str(exc)
    fields: dict[str, Any] = {"op": op, "error": text, "error_type": type(exc).__name__}
    if repeats is not None and peer is not None:
        suppressed = repeats.check(peer, op, type(exc).__name__, text[:256])
        if suppressed is None:
            return
        if suppressed:
            fields["repeated"] = suppressed
    if peer is not None:
        fields["peer"] = peer
    if command is not None:
        fields["command"] = command_summary(command)
    if isinstance(exc, flight.FlightError):  # already translated (or raised on purpose)
        log.warning("request_failed", **fields)
    else:
        bug = not isinstance(exc, ArrakisError)
        getattr(log, _level(exc))("request_failed", exc_info=bug, **fields)


@contextmanager
def edge(
    request_id: str,
    op: str,
    peer: str | None = None,
    command: bytes | None = None,
    repeats: RepeatFilter | None = None,
) -> Iterator[Call]:
    """Bind the request id; translate whatever escapes into a tagged Flight error. The log
    line names the peer and summarises the command (prefix, size, digest) when given."""
    call = Call(request_id)
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        try:
            yield call
        except Exception as exc:
            if isinstance(exc, scopemap.ReplayError):  # the planner's refusal: the client's
                exc = ReplayError(str(exc))
            _log_failure(exc, op, peer, command, repeats)
            raise to_flight_error(exc, call.request_id) from None


# Blocks counted per metrics update: the serving thread of a stream is a gRPC thread, and
# there (CPython 3.11) every call of a Python function from a fresh ``next()`` costs a
# thread-state stack allocation (mmap/munmap); the per-block path makes none (see
# router.stitch.direct), so the metrics are updated once per this many blocks.
BLOCKS_PER_UPDATE = 64


def guarded(
    batches: Iterator[pa.RecordBatch | pa.Table],
    request_id: str,
    op: str,
    on_close: Callable[[BaseException | None], None],
    on_batches: Callable[[int, int], None] | None = None,
    on_first: Callable[[], None] | None = None,
) -> Iterator[pa.RecordBatch | pa.Table]:
    """Iterate ``batches`` translating errors at the edge; always close the source.
    ``on_close`` gets how the stream ended (None: complete; GeneratorExit: the client left);
    ``on_batches(n, nbytes)``: ``n`` more batches of ``nbytes`` bytes were sent (reported
    every ``BLOCKS_PER_UPDATE`` and at the end); ``on_first()``: the first batch is ready."""
    started = time.monotonic()
    count = reported = nbytes = 0
    failure: BaseException | None = None
    try:
        with edge(request_id, op):
            for batch in batches:
                if not count and on_first is not None:
                    on_first()
                count += blocks_in(batch)
                nbytes += size_of(batch)
                if on_batches is not None and count - reported >= BLOCKS_PER_UPDATE:
                    on_batches(count - reported, nbytes)
                    reported, nbytes = count, 0
                yield batch
        log.info(
            "stream_done",
            request_id=request_id,
            op=op,
            batches=count,
            seconds=round(time.monotonic() - started, 3),
        )
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if on_batches is not None and count > reported:
            on_batches(count - reported, nbytes)
        close = getattr(batches, "close", None)
        if close is not None:
            close()
        on_close(failure)


class Meter:
    """Reports one client call to the metrics: in flight from construction; when its ``with``
    block ends, the outcome (the translated error, if any) and the duration. ``deferred``: a
    DoGet whose stream was handed out reports with :meth:`end` when the stream ends."""

    def __init__(self, metrics: RouterMetrics, rpc: str) -> None:
        self.metrics = metrics
        self.rpc = rpc
        self.kind = "invalid"  # until the envelope is parsed
        self.deferred = False
        self.started = time.perf_counter()
        metrics.started(rpc)

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None or not self.deferred:
            self.end(exc)

    def end(self, exc: BaseException | None) -> None:
        self.metrics.ended(self.rpc, self.kind, exc, time.perf_counter() - self.started)


class RouterFlightServer(flight.FlightServerBase):  # type: ignore[misc]
    """Arrow Flight front of a :class:`RouterService`."""

    def __init__(
        self,
        service: RouterService,
        location: str,
        *,
        native_output: bool = True,
        **kwargs: Any,
    ) -> None:
        middleware = {
            REQUEST_ID_MIDDLEWARE_KEY: RequestIdMiddlewareFactory(),
            AUTHORIZATION_MIDDLEWARE_KEY: AuthorizationMiddlewareFactory(),
        }
        super().__init__(location, middleware=middleware, **kwargs)
        self.service = service
        # DoGet streams leave through router._chunkstream when built (router.outstream)
        self.native_output = native_output and NATIVE
        self.repeats = RepeatFilter()  # collapses identical failures per peer in the log
        # memory freed by a burst of streams goes back to the system once they have ended
        self.idle_trim = IdleTrim(service.timer.call_later, lambda: self.open_streams == 0)

    def __repr__(self) -> str:
        return f"<RouterFlightServer port={self.port} open_streams={self.open_streams}>"

    @property
    def open_streams(self) -> int:
        """DoGet streams handed out and not yet ended (the metrics gauge: thread-safe)."""
        return int(self.service.metrics.open_streams._value.get())

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        rid = request_id_from_context(context)
        command = command_of(descriptor)
        with (
            Meter(self.service.metrics, "GetFlightInfo") as meter,
            edge(rid, "get_flight_info", context.peer(), command, self.repeats),
        ):
            require_command(descriptor, "GetFlightInfo")
            envelope = self.service.accept(command, "command")
            meter.kind = envelope.request
            auth = authorization_from_context(context)
            log.info("get_flight_info", request=envelope.request, auth=auth is not None)
            ctx = self.service.context(rid, envelope.request, auth)
            try:
                endpoints = self.service.flight_info(envelope, ctx)
            finally:
                self.service.finish(ctx)
            return flight.FlightInfo(pa.schema([]), descriptor, endpoints, -1, -1)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        rid = request_id_from_context(context)
        metrics = self.service.metrics
        data = ticket.ticket  # (each read of the property copies the bytes)
        with (
            Meter(metrics, "DoGet") as meter,
            edge(rid, "do_get", context.peer(), data, self.repeats) as call,
        ):
            envelope = self.service.accept(data, "ticket")
            # one request id for GetFlightInfo and the DoGet of the ticket it issued
            rid = call.rebind(correlate(context, rid, envelope.request_id))
            meter.kind = envelope.request
            auth = authorization_from_context(context)
            log.info("do_get", request=envelope.request, auth=auth is not None)

            slot = self.service.admission.admit(client_address(context.peer()))
            # the client leaving, the server draining or the deadline cancel ctx's token;
            # the service asks gRPC whether the client is still there (one sweep for all)
            ctx = self.service.context(rid, envelope.request, auth, context.is_cancelled)
            try:
                schema, batches = self.service.do_get(envelope, ctx)
            except BaseException:
                self.service.finish(ctx)
                slot.release()
                raise
            args = envelope.args
            live = isinstance(args, StreamArgs) and (args.start is None or args.end is None)
            kind = stream_kind(envelope.request, live)
            metrics.open_streams.inc()
            meter.deferred = True

            ended = threading.Lock()

            def closed(failure: BaseException | None) -> None:
                if not ended.acquire(blocking=False):
                    return  # already accounted for
                slot.release()
                metrics.open_streams.dec()
                if self.open_streams == 0:
                    self.idle_trim.idle()
                metrics.stream_seconds.labels(kind).observe(time.perf_counter() - meter.started)
                meter.end(failure)
                self.service.finish(ctx)

            def first() -> None:
                elapsed = time.perf_counter() - meter.started
                metrics.first_block_seconds.labels(kind).observe(elapsed)

            def sent(blocks: int, nbytes: int) -> None:
                metrics.stream_sent(kind, blocks, nbytes)

            stream = guarded(batches, rid, f"do_get {envelope.request}", closed, sent, first)
            # `guarded` accounts for the stream on every exit once gRPC starts reading it; a
            # client gone before the first read never starts it: account when it is collected.
            weakref.finalize(stream, closed, GeneratorExit())
            return data_stream(schema, stream, native=self.native_output)

    def do_action(
        self, context: flight.ServerCallContext, action: flight.Action
    ) -> Iterator[bytes]:
        rid = request_id_from_context(context)
        with (
            Meter(self.service.metrics, "DoAction") as meter,
            edge(rid, "do_action", context.peer(), None, self.repeats),
        ):
            meter.kind = action.type if action.type in ACTIONS else "unknown"
            log.info("do_action", action=shorten(action.type, 64))
            check_size(action.body.to_pybytes(), "action body", self.service.settings.limits)
            body = self.service.action(action.type)
        return iter([body])

    def list_actions(self, context: flight.ServerCallContext) -> list[tuple[str, str]]:
        return self.service.list_actions()

    def list_flights(
        self, context: flight.ServerCallContext, criteria: bytes
    ) -> Iterator[flight.FlightInfo]:
        self._unimplemented(context, "ListFlights")

    def get_schema(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.SchemaResult:
        try:
            self._unimplemented(context, "GetSchema")
        except flight.FlightError as exc:
            raise UntracedError(str(exc)) from None

    def do_put(self, context: Any, descriptor: Any, reader: Any, writer: Any) -> None:
        self._unimplemented(context, "DoPut")

    def _unimplemented(self, context: flight.ServerCallContext, rpc: str) -> NoReturn:
        with edge(request_id_from_context(context), rpc, context.peer(), None, self.repeats):
            raise UnimplementedError(
                f"{rpc} is not part of the Arrakis protocol (UNIMPLEMENTED); use "
                "GetFlightInfo/DoGet with a JSON request"
            )

    def do_exchange(
        self,
        context: flight.ServerCallContext,
        descriptor: flight.FlightDescriptor,
        reader: flight.MetadataRecordBatchReader,
        writer: flight.MetadataRecordBatchWriter,
    ) -> None:
        rid = request_id_from_context(context)
        command = command_of(descriptor)
        with (
            Meter(self.service.metrics, "DoExchange") as meter,
            edge(rid, "do_exchange", context.peer(), command, self.repeats),
        ):
            require_command(descriptor, "DoExchange")
            envelope = self.service.accept(command, "command")
            meter.kind = envelope.request
            auth = authorization_from_context(context)
            log.info("do_exchange", request=envelope.request, auth=auth is not None)
            try:
                incoming = list(reader.read_all().to_batches())
            except flight.FlightError:
                raise  # cancelled, timed out...: translated by the edge as it is
            except (OSError, pa.ArrowException) as exc:  # the client sent no/bad Arrow data
                raise InvalidRequestError(
                    f"invalid {envelope.request} exchange: {shorten(str(exc), 200)}"
                ) from None
            if context.is_cancelled():
                raise CancelledError("the client cancelled the exchange")
            ctx = self.service.context(rid, envelope.request, auth)
            try:
                answer = self.service.exchange(envelope, incoming, ctx)
            finally:
                self.service.finish(ctx)
            if answer:
                writer.begin(answer[0].schema)
                for batch in answer:
                    writer.write_batch(batch)
