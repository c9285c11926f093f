"""A bare pyarrow Flight relay: the floor any proxy pays for one extra hop.

GetFlightInfo answers one reuse-connection endpoint with the request as ticket; DoGet opens
the same DoGet on the downstream and re-yields its batches untouched. No validation, no
routing, no stitching. Used by bench/throughput.py as the baseline for the router.

    python bench/relay.py --url grpc://127.0.0.1:0 --downstream grpc://127.0.0.1:PORT
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.flight as flight

REUSE = "arrow-flight-reuse-connection://?"


class BareRelay(flight.FlightServerBase):  # type: ignore[misc]
    def __init__(self, location: str, downstream: str) -> None:
        super().__init__(location)
        self._downstream = flight.connect(downstream)

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        endpoint = flight.FlightEndpoint(flight.Ticket(descriptor.command), [REUSE])
        return flight.FlightInfo(pa.schema([]), descriptor, [endpoint], -1, -1)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        reader = self._downstream.do_get(ticket)

        def batches() -> Iterator[pa.RecordBatch]:
            for chunk in reader:
                yield chunk.data

        return flight.GeneratorStream(reader.schema, batches())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="grpc://127.0.0.1:0")
    parser.add_argument("--downstream", required=True)
    args = parser.parse_args()
    server = BareRelay(args.url, args.downstream)
    host = args.url.removeprefix("grpc://").rsplit(":", 1)[0]
    print(f"serving grpc://{host}:{server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve()


if __name__ == "__main__":
    main()
