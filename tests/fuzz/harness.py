"""The fuzz target: a real router (proxy mode) in front of a real mock downstream, called
over real Flight; every answer is classified (outcome class x RPC) and checked.

An outcome is the Flight class of the answer ("ok" when it succeeded); the checks are the
house-plan invariant 3: no INTERNAL, no traceback or source path in a message, every
message <= 4 KB, an answer (first batch or error) within ``HANG_S`` seconds, and the log
written for one input bounded."""

from __future__ import annotations

import contextlib
import io
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.flight as flight
import structlog

from router import logging as router_logging
from router.protocol.errors import MAX_MESSAGE_BYTES
from tests.fuzz.strategies import Probe

HANG_S = 5.0
MAX_LOG_PER_INPUT = 2048
_CLIENT_SUFFIXES = (". gRPC client debug context:", ". Client context:", ". Detail:")


class CountingSink(io.TextIOBase):
    """A log stream that only counts what is written (bytes, lines), thread-safe."""

    def __init__(self) -> None:
        self.bytes = 0
        self.lines = 0
        self.longest = 0
        self.sample: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            size = len(text.encode("utf-8", "backslashreplace"))
            self.bytes += size
            self.lines += text.count("\n")
            self.longest = max(self.longest, size)
            if size > MAX_LOG_PER_INPUT and len(self.sample) < 3:
                self.sample.append(text[:300])
        return len(text)

    def flush(self) -> None:
        pass


def server_message(exc: BaseException) -> str:
    """What the server sent: the client-side text without what pyarrow's client appends."""
    text = str(exc)
    cut = min((i for i in (text.find(s) for s in _CLIENT_SUFFIXES) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def outcome_of(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    return type(exc).__name__.removeprefix("Flight").removesuffix("Error") or "Error"


@dataclass
class Answer:
    probe: Probe
    outcome: str
    message: str
    seconds: float
    log_bytes: int

    def problems(self) -> list[str]:
        found = []
        if self.outcome in ("Internal", "Timed", "TimedOut"):
            found.append(f"{self.outcome}: {self.message[:300]}")
        if "Traceback" in self.message or '.py"' in self.message or ".py," in self.message:
            found.append(f"traceback/path in message: {self.message[:300]}")
        if len(self.message.encode("utf-8", "backslashreplace")) > MAX_MESSAGE_BYTES:
            found.append(f"message of {len(self.message.encode())} bytes")
        if self.seconds > HANG_S:
            found.append(f"no answer within {HANG_S} s ({self.seconds:.1f} s)")
        return found


@dataclass
class Tally:
    """Outcome class x RPC, plus the figures the issue asks for."""

    counts: Counter[tuple[str, str]] = field(default_factory=Counter)
    log_bytes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    longest_message: int = 0
    problems: list[str] = field(default_factory=list)

    def add(self, answer: Answer) -> None:
        self.counts[(answer.outcome, answer.probe.rpc)] += 1
        self.log_bytes.append(answer.log_bytes)
        self.seconds.append(answer.seconds)
        self.longest_message = max(self.longest_message, len(answer.message.encode()))
        self.problems.extend(f"{answer.probe!r}: {p}" for p in answer.problems())

    def summary(self) -> str:
        if not self.log_bytes:
            return "no inputs"
        rpcs = sorted({r for _, r in self.counts})
        outcomes = sorted({o for o, _ in self.counts})
        width = max(len(r) for r in rpcs) + 2
        lines = [
            f"door fuzz: {len(self.log_bytes)} inputs",
            "outcome".ljust(14) + "".join(r.rjust(width) for r in rpcs),
        ]
        for o in outcomes:
            lines.append(o.ljust(14) + "".join(str(self.counts[(o, r)]).rjust(width) for r in rpcs))
        logs = sorted(self.log_bytes)
        secs = sorted(self.seconds)
        p99 = logs[min(len(logs) - 1, int(len(logs) * 0.99))]
        lines += [
            f"log bytes per input: median {statistics.median(logs):.0f}, p99 {p99}, "
            f"max {logs[-1]}, total {sum(logs)}",
            f"answer seconds: median {statistics.median(secs):.4f}, "
            f"p99 {secs[min(len(secs) - 1, int(len(secs) * 0.99))]:.3f}, max {secs[-1]:.3f}",
            f"longest message: {self.longest_message} bytes; problems: {len(self.problems)}",
        ]
        return "\n".join(lines)


class Door:
    """Calls one probe over real Flight and classifies the answer."""

    def __init__(self, url: str, sink: CountingSink) -> None:
        self.url = url
        self.sink = sink
        self.client = flight.connect(url)
        self.options = flight.FlightCallOptions(timeout=HANG_S + 5)

    def close(self) -> None:
        self.client.close()

    def call(self, probe: Probe) -> Answer:
        before = self.sink.bytes
        started = time.monotonic()
        exc: BaseException | None = None
        try:
            self._invoke(probe)
        except (flight.FlightError, pa.ArrowException) as caught:
            exc = caught
        seconds = time.monotonic() - started
        message = server_message(exc) if exc is not None else ""
        return Answer(probe, outcome_of(exc), message, seconds, self.sink.bytes - before)

    def _invoke(self, probe: Probe) -> None:
        c, o, data = self.client, self.options, probe.payload
        if probe.rpc == "GetFlightInfo":
            c.get_flight_info(flight.FlightDescriptor.for_command(data), o)
        elif probe.rpc == "DoGet":
            reader = c.do_get(flight.Ticket(data), o)
            try:
                for _ in range(3):  # the first blocks, or the error: not a whole stream
                    reader.read_chunk()
            except StopIteration:
                pass
            finally:
                reader.cancel()
        elif probe.rpc == "DoAction":
            list(c.do_action(flight.Action(probe.action, data), o))
        elif probe.rpc == "DoExchange":
            writer, reader = c.do_exchange(flight.FlightDescriptor.for_command(data), o)
            try:
                with contextlib.suppress(pa.ArrowException):
                    if data[:1] == b"{":  # sometimes send data too
                        table = pa.table({"x": [1, 2]})
                        writer.begin(table.schema)
                        writer.write_table(table)
                    writer.done_writing()
                reader.read_all()
            finally:
                with contextlib.suppress(pa.ArrowException):
                    writer.close()
        elif probe.rpc == "DoPut":
            writer, _ = c.do_put(
                flight.FlightDescriptor.for_command(data), pa.schema([("x", pa.int64())]), o
            )
            writer.close()
        elif probe.rpc == "GetSchema":
            c.get_schema(flight.FlightDescriptor.for_command(data), o)
        elif probe.rpc == "ListFlights":
            list(c.list_flights(data, o))
        elif probe.rpc == "PathDescriptor":
            path = data.decode("utf-8", "replace")[:100] or "x"
            c.get_flight_info(flight.FlightDescriptor.for_path(path), o)
        else:  # pragma: no cover
            raise AssertionError(probe.rpc)


@contextlib.contextmanager
def counting_logs() -> Iterator[CountingSink]:
    sink = CountingSink()
    router_logging.configure("json", "info", sink)
    try:
        yield sink
    finally:
        structlog.reset_defaults()
