"""A backend's stream is closed exactly once on every exit, even when never read."""

from __future__ import annotations

import gc
from dataclasses import replace

import pyarrow.flight as flight

from router.protocol.envelope import Envelope, StreamArgs
from router_backends.base import BlockStream, CallContext
from router_backends.mock import MockBackend
from router_backends.testing import serve_backend

from .conftest import GPS0, NS


class ClosingMock(MockBackend):
    """The default mock, counting how often its streams are closed."""

    def __init__(self) -> None:
        super().__init__(None)
        self.closed = 0

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        def close() -> None:
            self.closed += 1

        return replace(super().stream(args, ctx), close=close)


class Context:
    """The part of a Flight ServerCallContext the server base uses."""

    def get_middleware(self, key: str) -> None:
        return None

    def is_cancelled(self) -> bool:
        return False


def _ticket(seconds: int) -> flight.Ticket:
    start = GPS0 * NS
    args = StreamArgs(channels=("H1:GDS-CALIB_STRAIN",), start=start, end=start + seconds * NS)
    return flight.Ticket(Envelope("Stream", args).encode())


def test_a_stream_nobody_reads_is_still_closed() -> None:
    backend = ClosingMock()
    with serve_backend(backend) as server:
        stream = server.do_get(Context(), _ticket(1))
        assert backend.closed == 0
        del stream
        gc.collect()
        assert backend.closed == 1


def test_a_stream_read_to_the_end_is_closed_once() -> None:
    backend = ClosingMock()
    with serve_backend(backend) as server:
        client = flight.connect(server.url)
        try:
            table = client.do_get(_ticket(1)).read_all()
        finally:
            client.close()
        assert table.num_rows == 16
    gc.collect()
    assert backend.closed == 1
