"""bench/relay.py, the baseline the benchmarks compare the router with: every shape of it
relays the downstream's stream unchanged, one row per batch on the wire."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
import pytest

from router_backends.testing import ServerProcess

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
BACKEND = Path(sys.executable).parent / "router-backend"
TOML = Path(__file__).parent / "channels_fast.toml"
START = 1_400_000_000 * 10**9
COMMAND = json.dumps(
    {
        "request": "Stream",
        "args": {
            "channels": ["H1:GDS-FAST"],
            "start": START,
            "end": START + 3 * 10**9,  # 48 blocks
            "replay_start": None,
            "replay_end": None,
            "replay_id": None,
        },
        "version": "0.5.0",
    }
).encode()


def _read(url: str) -> list[pa.RecordBatch]:
    client = flight.connect(url)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(COMMAND))
        return [c.data for e in info.endpoints for c in client.do_get(e.ticket)]
    finally:
        client.close()


@pytest.mark.parametrize("modes", [[], ["--window"], ["--shape", "table:5"], ["--shape", "list:7"]])
def test_every_relay_shape_passes_the_stream_through_unchanged(modes: list[str]) -> None:
    mock_argv = [str(BACKEND), "mock", "--url", "grpc://127.0.0.1:0", str(TOML)]
    with ServerProcess(mock_argv, name="mock") as mock:
        want = _read(mock.url)
        relay_argv = [sys.executable, str(ROOT / "bench" / "relay.py"), "--downstream", mock.url]
        with ServerProcess([*relay_argv, *modes], name="relay") as relay:
            got = _read(relay.url)
    assert len(want) == 48
    assert [b.num_rows for b in got] == [1] * 48  # one block per batch, whatever the shape
    assert pa.Table.from_batches(got).equals(pa.Table.from_batches(want))


def test_an_unknown_shape_is_refused() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from relay import BareRelay
    finally:
        sys.path.remove(str(ROOT / "bench"))
    with pytest.raises(ValueError, match="table:K"):
        BareRelay("grpc://127.0.0.1:0", "grpc://127.0.0.1:1", shape="table:x")
