"""A bare pyarrow Flight relay: the floor any proxy pays for one extra hop.

GetFlightInfo answers one reuse-connection endpoint with the request as ticket; DoGet opens
the same DoGet on the downstream and re-yields its batches untouched. No validation, no
routing, no stitching. Used by bench/throughput.py and bench/concurrency.py as the baseline
for the router.

For layer-by-layer comparisons (bench/ab.py) it can take the router's shapes without its
work: ``--window`` opens the downstream with the router's fixed receive window
(``router.downstream.WINDOW``); ``--shape table:K`` hands pyarrow Tables of K batches, as the
router's historical path does, ``--shape list:K`` reads K batches then re-yields them one by
one.

    python bench/relay.py --url grpc://127.0.0.1:0 --downstream grpc://127.0.0.1:PORT
                          [--window] [--shape batch|table:K|list:K]
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from itertools import islice

import pyarrow as pa
import pyarrow.flight as flight

REUSE = "arrow-flight-reuse-connection://?"


class BareRelay(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(
        self, location: str, downstream: str, window: bool = False, shape: str = "batch"
    ) -> None:
        kind, _, k = shape.partition(":")
        if kind not in ("batch", "table", "list") or (kind != "batch" and not k.isdigit()):
            raise ValueError(f"--shape: batch, table:K or list:K, not {shape!r}")
        self._kind, self._k = kind, int(k or 1)
        super().__init__(location)
        options = []
        if window:
            from router.downstream import WINDOW

            options = WINDOW
        self._downstream = flight.connect(downstream, generic_options=options)

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        endpoint = flight.FlightEndpoint(flight.Ticket(descriptor.command), [REUSE])
        return flight.FlightInfo(pa.schema([]), descriptor, [endpoint], -1, -1)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        reader = self._downstream.do_get(ticket)
        schema, kind, k = reader.schema, self._kind, self._k

        def batches() -> Iterator[pa.RecordBatch]:
            for chunk in reader:
                yield chunk.data

        def chunks() -> Iterator[pa.RecordBatch | pa.Table]:
            rows = (chunk.data for chunk in reader)
            while chunk := list(islice(rows, k)):
                if kind == "table":
                    yield pa.Table.from_batches(chunk, schema)
                else:
                    yield from chunk

        return flight.GeneratorStream(schema, batches() if kind == "batch" else chunks())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="grpc://127.0.0.1:0")
    parser.add_argument("--downstream", required=True)
    parser.add_argument("--window", action="store_true", help="the router's receive window")
    parser.add_argument("--shape", default="batch", help="batch (default), table:K or list:K")
    args = parser.parse_args()
    server = BareRelay(args.url, args.downstream, args.window, args.shape)
    host = args.url.removeprefix("grpc://").rsplit(":", 1)[0]
    print(f"serving grpc://{host}:{server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve()


if __name__ == "__main__":
    main()
