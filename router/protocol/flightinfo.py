"""FlightInfo helpers: the reuse-connection marker and endpoint construction (PROTOCOL §3)."""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.flight as flight

__all__ = ["REUSE_CONNECTION_URI", "flight_info"]

#: location telling the client to reuse its connection (metadata) or reconnect to the URL
#: it started from (streams)
REUSE_CONNECTION_URI = "arrow-flight-reuse-connection://?"


def flight_info(
    descriptor: flight.FlightDescriptor,
    schema: pa.Schema,
    tickets: Sequence[bytes],
    locations: Sequence[str] = (REUSE_CONNECTION_URI,),
) -> flight.FlightInfo:
    """A FlightInfo with one endpoint per ticket, all at ``locations``; counts unknown (-1)."""
    endpoints = [
        flight.FlightEndpoint(ticket, [flight.Location(loc) for loc in locations])
        for ticket in tickets
    ]
    return flight.FlightInfo(schema, descriptor, endpoints, -1, -1)
