"""Error mapping over a real (tiny) Flight server, request ids, GPS time."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.flight as flight
import pytest

from router.protocol import errors as E
from router.protocol.gps import (
    GPS_EPOCH_UNIX,
    FakeClock,
    SystemClock,
    gps_now_ns,
    unix_to_gps_ns,
)
from router.protocol.reqid import (
    REQUEST_ID_HEADER,
    REQUEST_ID_MIDDLEWARE_KEY,
    RequestIdMiddlewareFactory,
    new_request_id,
    request_id_from_context,
    sanitize_request_id,
)

CASES: list[tuple[E.ArrakisError | Exception, type[flight.FlightError], str]] = [
    (
        E.InvalidRequestError("invalid Stream request: args.start: bad"),
        flight.FlightServerError,
        "Flight error: invalid Stream request: args.start: bad",
    ),
    (
        E.UnimplementedError("GetSchema is not part of the Arrakis protocol"),
        flight.FlightServerError,
        "Flight error: GetSchema is not part of the Arrakis protocol",
    ),
    (
        E.UnknownArgumentsError("unknown Stream argument(s): time"),
        flight.FlightServerError,
        "Flight error: unknown Stream argument(s): time",
    ),
    (
        E.ChannelsNotAvailableError(["H1:A", "H1:B"]),
        flight.FlightUnavailableError,
        "channel(s) {H1:A, H1:B} are not available on this server",
    ),
    (
        E.ChannelsNotAvailableError(["H1:A"], "outside retention [now-600 s, now]"),
        flight.FlightUnavailableError,
        "channel(s) {H1:A} are not available on this server: outside retention [now-600 s, now]",
    ),
    (E.CannotServeError("nothing"), flight.FlightServerError, "Flight error: nothing"),
    (E.ReplayError("r"), flight.FlightServerError, "Flight error: r"),
    (E.UnsupportedError("u"), flight.FlightServerError, "Flight error: u"),
    (E.UnauthorizedError("no"), flight.FlightUnauthorizedError, "no"),
    (E.UnavailableError("gone"), flight.FlightUnavailableError, "gone"),
    (E.TimedOutError("slow"), flight.FlightTimedOutError, "slow"),
    (E.CancelledError("stop"), flight.FlightCancelledError, "stop"),
    # our bugs: the type only, the text (which may hold internal values) stays in the log
    (KeyError("k"), flight.FlightInternalError, "internal error (KeyError)"),
    (ValueError("line1\nline2"), flight.FlightInternalError, "internal error (ValueError)"),
]


class ErroringServer(flight.FlightServerBase):  # type: ignore[misc]
    """Raises CASES[int(ticket)] through to_flight_error, tagged with the call's request id."""

    def __init__(self) -> None:
        super().__init__(
            "grpc://127.0.0.1:0",
            middleware={REQUEST_ID_MIDDLEWARE_KEY: RequestIdMiddlewareFactory()},
        )

    def do_get(self, context: Any, ticket: flight.Ticket) -> flight.RecordBatchStream:
        rid = request_id_from_context(context)
        raise E.to_flight_error(CASES[int(ticket.ticket)][0], rid)


@pytest.fixture(scope="module")
def server() -> Iterator[flight.FlightClient]:
    with ErroringServer() as srv, flight.connect(f"grpc://127.0.0.1:{srv.port}") as client:
        yield client


@pytest.mark.parametrize("index", range(len(CASES)))
def test_error_round_trip(server: flight.FlightClient, index: int) -> None:
    _exc, wire_cls, text = CASES[index]
    options = flight.FlightCallOptions(headers=[(REQUEST_ID_HEADER.encode(), b"abc/123")])
    with pytest.raises(flight.FlightError) as info:
        server.do_get(flight.Ticket(str(index).encode()), options).read_all()
    got = info.value
    assert type(got) is wire_cls
    assert str(got).startswith(f"{text} [request: abc123]")
    assert "Traceback" not in str(got)
    back = E.from_flight_error(got, "grpc://x:1")
    assert back.flight_class is wire_cls
    assert str(back) == f"grpc://x:1: {text.removeprefix('Flight error: ')} [request: abc123]"
    # and once more to the wire: class kept
    assert type(E.to_flight_error(back, "r")) is (back.wire_class or wire_cls)


def test_generated_request_id(server: flight.FlightClient) -> None:
    with pytest.raises(flight.FlightError) as info:
        server.do_get(flight.Ticket(b"0")).read_all()
    assert re.search(r"\[request: [0-9a-f]{8}\]", str(info.value))


def test_error_subclasses_map_to_flight_classes() -> None:
    assert E.ArrakisError("x").flight_class is flight.FlightInternalError
    assert issubclass(E.ChannelsNotAvailableError, E.UnavailableError)
    err = E.ChannelsNotAvailableError(("H1:A",))
    assert err.channels == ("H1:A",)
    raw = E.to_flight_error(flight.FlightUnavailableError("x. Detail: Unavailable"), "id")
    assert type(raw) is flight.FlightUnavailableError and str(raw) == "x [request: id]"
    assert E.to_flight_error(E.ServerError("s"), None).args[0] == "s"


def test_sanitize_request_id() -> None:
    assert sanitize_request_id(None) is None
    assert sanitize_request_id("") is None
    assert sanitize_request_id("a b/c") == "abc"
    assert sanitize_request_id(b"x" * 40) == "x" * 32
    assert sanitize_request_id("A-z.9_") == "A-z.9_"
    assert re.fullmatch(r"[0-9a-f]{8}", new_request_id())


def test_gps_time() -> None:
    assert unix_to_gps_ns(1763953724) == 1447988942 * 10**9
    assert unix_to_gps_ns(GPS_EPOCH_UNIX, leap=0) == 0
    now = gps_now_ns()
    assert abs(now - unix_to_gps_ns(time.time())) < 10**9
    assert abs(SystemClock().now_ns() - now) < 10**9
    assert SystemClock(leap_seconds=0).now_ns() < now
    clock = FakeClock(5)
    clock.advance(10)
    assert clock.now_ns() == 15
    clock.set(1)
    assert clock.now_ns() == 1


def test_error_texts_are_bounded_and_valid_utf8(server: flight.FlightClient) -> None:
    names = [f"H1:CHANNEL_NUMBER_{i:06d}" for i in range(100_000)]
    huge = E.to_flight_error(E.ChannelsNotAvailableError(names), "abc")
    text = str(huge)
    assert len(text.encode()) <= E.MAX_MESSAGE_BYTES
    assert "H1:CHANNEL_NUMBER_000000" in text and "and 99980 more" in text
    assert text.endswith("[request: abc]")
    long = E.to_flight_error(E.InvalidRequestError("x" * 100_000 + "\ud800"), "abc")
    assert len(str(long).encode()) <= E.MAX_MESSAGE_BYTES
    assert str(long).endswith("... (truncated) [request: abc]")
    lone = E.to_flight_error(E.ReplayError("unknown replay '\ud800'"), "abc")
    assert str(lone) == "unknown replay '\\ud800' [request: abc]"  # encodable


def test_name_list_shortens_many_and_long_names() -> None:
    assert E.name_list(["a", "b"]) == "a, b"
    assert E.name_list([str(i) for i in range(25)], 3) == "0, 1, 2 and 22 more"
    assert E.name_list(["x" * 500]) == "x" * 80 + "... (500 characters)"
