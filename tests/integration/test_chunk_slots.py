"""`router serve --chunk-slots`: historical chunks take turns (router.chunkgate), and a
client that stops reading does not stall the others. A real router process with one slot,
a real mock downstream: one raw pyarrow reader opens a long historical stream, reads one
batch and stops; meanwhile the real `arrakis` client fetches through the same router and
gets exactly the downstream's data. The operator reads the setting in router_started."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path

import arrakis
import numpy as np
import pyarrow.flight as flight
import pytest

from router_backends.testing import ServerProcess, serve_mock
from tests.integration.test_cli import GOOD, ROUTER, _serve_argv_for_mock, _started

pytestmark = pytest.mark.integration

STRAIN = "H1:GDS-CALIB_STRAIN"  # 16384 Hz float64 in the mock's default channel set
NS = 1_000_000_000
SPAN = (1400000000, 1400000016)


def _stream_cmd(start_s: int, end_s: int) -> bytes:
    args = {"channels": [STRAIN], "start": start_s * NS, "end": end_s * NS}
    return json.dumps({"request": "Stream", "args": args}).encode()


def test_a_client_that_stops_reading_does_not_stall_the_others(tmp_path: Path) -> None:
    with serve_mock() as mock:
        argv = _serve_argv_for_mock(tmp_path, mock, "--chunk-slots", "1")
        with ServerProcess(argv, name="router") as proc:
            stalled = flight.connect(proc.url)
            # 2000 s of 16 kHz samples (262 MB): far more than gRPC's windows hold, so the
            # router's writer for it blocks while the reader sleeps, holding its turn
            info = stalled.get_flight_info(
                flight.FlightDescriptor.for_command(_stream_cmd(1400000000, 1400002000))
            )
            reader = stalled.do_get(info.endpoints[0].ticket)
            reader.read_chunk()
            time.sleep(1.0)  # the stalled stream's writer is blocked by now
            sent = time.monotonic()
            with ThreadPoolExecutor(1) as pool:
                fetch = pool.submit(arrakis.Client(proc.url).fetch, [STRAIN], *SPAN)
                try:
                    got = fetch.result(timeout=60)
                except FuturesTimeout:
                    reader.cancel()  # unblocks the router, so the fetch ends and the pool too
                    pytest.fail("a fetch beside a stalled stream did not end within 60 s")
            took = time.monotonic() - sent
            want = arrakis.Client(mock).fetch([STRAIN], *SPAN)
            reader.cancel()
            stalled.close()
            log = proc.log_text().splitlines()
    assert got.time_ns == want.time_ns and len(got.data[STRAIN]) == 16 * 16384
    np.testing.assert_array_equal(got.data[STRAIN], want.data[STRAIN])
    assert _started(log)["chunk_slots"] == 1
    print(f"fetch beside a stalled stream, one slot: {took:.2f} s")


def test_serve_refuses_negative_chunk_slots(tmp_path: Path) -> None:
    smap = tmp_path / "map.yaml"
    smap.write_text(GOOD)
    argv = [*ROUTER, "serve", "--scope-map", str(smap), "--url", "grpc://127.0.0.1:0"]
    res = subprocess.run([*argv, "--chunk-slots", "-1"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "--chunk-slots must be >= 0 (0: no limit), got -1" in res.stderr
    assert "Traceback" not in res.stderr
