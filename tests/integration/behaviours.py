"""Tiny Arrakis downstreams, each named for its behaviour, on port 0."""

from __future__ import annotations

import json
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
    ``info_delay``: GetFlightInfo sleeps that long first.
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail_after: int | None = None,
        silent_after: int | None = None,
        info_delay: float = 0.0,
    ) -> None:
        recorder = HeaderRecorder()
        super().__init__(
            "grpc://127.0.0.1:0",
            middleware={REQUEST_ID_MIDDLEWARE_KEY: RequestIdMiddlewareFactory(), "rec": recorder},
        )
        self.recorder = recorder
        self.delay = delay
        self.fail_after = fail_after
        self.silent_after = silent_after
        self.info_delay = info_delay
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
