"""Tiny Arrakis downstreams, each named for its behaviour, on port 0."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from router.protocol.arrow import METADATA_SCHEMA, metadata_batches, stream_schema
from router.protocol.channel import ChannelMeta
from router.protocol.reqid import (
    REQUEST_ID_MIDDLEWARE_KEY,
    RequestIdMiddlewareFactory,
    request_id_from_context,
)
from tests.router.blockgen import downstream_batch

STRIDE = 62_500_000
CHANNEL = ChannelMeta("H1:TST-A", "float64", 256, stride=STRIDE, max_latency=10**9)


class HeaderRecorder(flight.ServerMiddlewareFactory):  # type: ignore[misc]
    """Records ``(method name, authorization header values)`` of every incoming call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str]]] = []

    def start_call(self, info: Any, headers: dict[str, list[str]]) -> None:
        self.calls.append((info.method.name, list(headers.get("authorization", []))))


class ScriptedArrakis(flight.FlightServerBase):  # type: ignore[misc]
    """Serves CHANNEL: Describe answers, Stream blocks every ``delay`` s. Counts open DoGets.
    ``recorder.calls``: the authorization headers each incoming call carried.

    ``fail_after``: raise FlightUnavailableError after that many blocks;
    ``silent_after``: stop sending (but keep the call open) after that many blocks;
    ``end_after``: end the stream normally (a graceful shutdown) after that many blocks;
    ``drop_every`` / ``repeat_every``: skip / send twice every N-th block (N, 2N, ...);
    ``info_delay``: GetFlightInfo sleeps that long first; ``port``: bind this port.
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        silent_after: int | None = None,
        end_after: int | None = None,
        drop_every: int | None = None,
        repeat_every: int | None = None,
        info_delay: float = 0.0,
        port: int = 0,
    ) -> None:
        recorder = HeaderRecorder()
        super().__init__(
            f"grpc://127.0.0.1:{port}",
            middleware={REQUEST_ID_MIDDLEWARE_KEY: RequestIdMiddlewareFactory(), "rec": recorder},
        )
        self.recorder = recorder
        self.delay = delay
        self.fail_after = fail_after
        self.silent_after = silent_after
        self.end_after = end_after
        self.drop_every = drop_every
        self.repeat_every = repeat_every
        self.info_delay = info_delay
        self.ended = threading.Event()  # set when a stream ended early (end_after)
        self.open = 0
        self.streams = 0
        self.describes = 0
        self.request_ids: list[str] = []
        self._lock = threading.Lock()

    def get_flight_info(
        self, context: Any, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        time.sleep(self.info_delay)
        endpoint = flight.FlightEndpoint(descriptor.command, ["arrow-flight-reuse-connection://?"])
        return flight.FlightInfo(pa.schema([]), descriptor, [endpoint], -1, -1)

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.FlightDataStream:
        doc = json.loads(ticket.ticket)
        self.request_ids.append(request_id_from_context(context))
        if doc["request"] == "Describe":
            self.describes += 1
            return flight.RecordBatchStream(
                pa.Table.from_batches(metadata_batches([CHANNEL]), METADATA_SCHEMA)
            )
        args = doc["args"]
        return flight.GeneratorStream(
            stream_schema([CHANNEL]), self._blocks(context, args["start"], args["end"])
        )

    def _blocks(self, context: Any, start: int, end: int) -> Iterator[pa.RecordBatch]:
        with self._lock:
            self.open += 1
            self.streams += 1
        try:
            t = start - start % STRIDE
            sent = 0
            while t < end:
                if context.is_cancelled():
                    return
                if self.fail_after is not None and sent >= self.fail_after:
                    raise flight.FlightUnavailableError("backend went away")
                if self.silent_after is not None and sent >= self.silent_after:
                    while not context.is_cancelled():
                        time.sleep(0.02)
                    return
                if self.end_after is not None and sent >= self.end_after:
                    self.ended.set()
                    return
                k = (t - start) // STRIDE
                if not (self.drop_every and k and k % self.drop_every == 0):
                    yield downstream_batch([CHANNEL], t, STRIDE)
                    if self.repeat_every and k and k % self.repeat_every == 0:
                        yield downstream_batch([CHANNEL], t, STRIDE)
                sent += 1
                t += STRIDE
                if self.delay:
                    time.sleep(self.delay)
        finally:
            with self._lock:
                self.open -= 1


def one_endpoint_map(*urls: str) -> str:
    """Every url a replica of H1 (all times)."""
    return "\n".join(f"{u}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}" for u in urls)


# ---------------------------------------------------------------------- the gallery
# Downstreams named for one misbehaviour each (pyarrow's Flight tests habit). Serve them with
# ``tests.integration.servers.serving``; ``RestartsMidStream`` and ``RefusesThenRecovers``
# manage their own servers (context managers).


class EndsEarly(ScriptedArrakis):
    """Ends every stream normally after ``after`` blocks: a graceful shutdown closing its
    open streams with a clean end of stream (upstream servers on SIGTERM)."""

    def __init__(self, after: int, **kw: Any) -> None:
        super().__init__(end_after=after, **kw)


class NeverStartsStream(ScriptedArrakis):
    """Answers metadata, opens the Stream DoGet and never sends a block."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(silent_after=0, **kw)


class StallsAfter(ScriptedArrakis):
    """Sends ``n`` blocks, then nothing, keeping the call open."""

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(silent_after=n, **kw)


class DropsBlocks(ScriptedArrakis):
    """Skips every ``every``-th block inside a stream it finishes properly (a data gap)."""

    def __init__(self, every: int, **kw: Any) -> None:
        super().__init__(drop_every=every, **kw)


class RepeatsBlocks(ScriptedArrakis):
    """Sends every ``every``-th block twice."""

    def __init__(self, every: int, **kw: Any) -> None:
        super().__init__(repeat_every=every, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Restartable:
    """A ScriptedArrakis on a fixed port that can be stopped and started again."""

    def __init__(self, **kw: Any) -> None:
        self.port = free_port()
        self.url = f"grpc://127.0.0.1:{self.port}"
        self.kw = kw
        self.server: ScriptedArrakis | None = None
        self._thread: threading.Thread | None = None
        self.starts = 0
        self._lock = threading.Lock()

    def start(self, **kw: Any) -> ScriptedArrakis:
        with self._lock:
            server = ScriptedArrakis(port=self.port, **{**self.kw, **kw})
            self.server = server
            self._thread = threading.Thread(target=server.serve, daemon=True)
            self._thread.start()
            self.starts += 1
            return server

    def stop(self) -> None:
        with self._lock:
            server, thread, self.server = self.server, self._thread, None
        if server is not None:
            server.shutdown()
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RestartsMidStream(_Restartable):
    """Sends ``after`` blocks, ends the stream cleanly, goes down (connections refused) for
    ``down_s`` seconds, then serves again, whole, on the same port (a rolling restart)."""

    def __init__(self, after: int, down_s: float = 0.2, **kw: Any) -> None:
        super().__init__(**kw)
        self.after = after
        self.down_s = down_s
        self._restarter: threading.Thread | None = None

    def __enter__(self) -> RestartsMidStream:
        server = self.start(end_after=self.after)
        self._restarter = threading.Thread(target=self._restart, args=(server,), daemon=True)
        self._restarter.start()
        return self

    def _restart(self, first: ScriptedArrakis) -> None:
        if not first.ended.wait(60):
            return
        self.stop()
        time.sleep(self.down_s)
        self.start()

    def __exit__(self, *exc: object) -> None:
        if self._restarter is not None:
            self._restarter.join(10)
        self.stop()


class RefusesThenRecovers(_Restartable):
    """Nothing listens on its port (connections refused) until :meth:`recover` starts the
    server there; :meth:`restart` stops and starts it again at once."""

    _later: threading.Timer | None = None

    def __enter__(self) -> RefusesThenRecovers:
        return self

    def recover(self, after: float = 0.0) -> None:
        if after:
            self._later = threading.Timer(after, self.start)
            self._later.daemon = True
            self._later.start()
        else:
            self.start()

    def __exit__(self, *exc: object) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later.join(10)
        self.stop()

    def restart(self) -> None:
        self.stop()
        self.start()
