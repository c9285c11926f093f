"""Live latency added by the router (not a test).

One mock (subprocess) serves 20 channels at 16384 Hz; a router (subprocess) sits in front of
it. Two raw pyarrow readers in this process stream the same live request at the same time,
one directly from the mock and one through the router, and record for every block the GPS
arrival time minus the block's end. The mock releases a block once its end has passed, so the
direct figure is the mock's own pacing and transfer; the router's added latency is the paired
difference per block (router arrival - direct arrival, same block time).

With ``--load N``, N reader processes (bench/concurrency.py's) read history through the
same router meanwhile, round after round (one 16 kHz channel, 64 s each): the live latency
of a router that is busy with other streams.

    python bench/live_latency.py [--seconds 60] [--quick] [--load N] [-- ROUTER_ARGS...]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import pyarrow.flight as flight
from _harness import (
    STRIDE,
    channels_toml,
    median,
    mock_behind_router,
    p99,
    stream_cmd,
    table,
)

from router.protocol.gps import gps_now_ns

CHANNELS = [f"X1:BENCH-LIVE_{i:02d}" for i in range(20)]
RATE = 16384


def write_inputs(tmp: Path) -> Path:
    return channels_toml(tmp / "live-channels.toml", dict.fromkeys(CHANNELS, RATE))


def live_cmd() -> bytes:
    return stream_cmd(CHANNELS, None, start_s=None)


class Reader(threading.Thread):
    """Streams the live request from ``url`` until ``stop``; block time -> arrival (GPS ns)."""

    def __init__(self, name: str, url: str, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.url = url
        self.stop = stop
        self.arrivals: dict[int, int] = {}
        self.null_blocks = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = flight.FlightClient(self.url)
            info = client.get_flight_info(flight.FlightDescriptor.for_command(live_cmd()))
            reader = client.do_get(info.endpoints[0].ticket)
            try:
                while not self.stop.is_set():
                    chunk = reader.read_chunk()
                    now = gps_now_ns()
                    batch = chunk.data
                    self.arrivals[int(batch.column(0)[0].as_py())] = now
                    if batch.column(1).flatten().null_count:
                        self.null_blocks += 1
            finally:
                reader.cancel()
                client.close()
        except BaseException as exc:  # reported by main
            self.error = exc


class Load(threading.Thread):
    """``n`` reader processes reading history through ``url``, round after round, until
    ``stop``."""

    def __init__(self, n: int, url: str, stop: threading.Event) -> None:
        super().__init__(name="load", daemon=True)
        from concurrency import Readers

        self.readers = Readers(n)
        self.n, self.url, self.stop, self.mb = n, url, stop, 0.0
        self.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                nbytes, _ = self.readers.round(self.n, self.url, stream_cmd(CHANNELS[:1], 64))
                self.mb += nbytes / 1e6
        finally:
            self.readers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="live streaming time")
    parser.add_argument("--quick", action="store_true", help="15 s instead")
    parser.add_argument("--load", type=int, default=0, metavar="N", help="historical readers")
    parser.add_argument("router_args", nargs="*", help="extra `router serve` arguments (after --)")
    opts = parser.parse_args()
    seconds = 15.0 if opts.quick else opts.seconds
    with tempfile.TemporaryDirectory(prefix="arrakis-bench-") as tmpdir:
        toml = write_inputs(Path(tmpdir))
        with mock_behind_router(
            Path(tmpdir), toml, "--log-level", "warning", *opts.router_args
        ) as (mock, router):
            stop = threading.Event()
            load = Load(opts.load, router, stop) if opts.load else None
            readers = [Reader("direct", mock, stop), Reader("router", router, stop)]
            for r in readers:
                r.start()
            time.sleep(seconds)
            stop.set()
            for r in readers:
                r.join(10)
            if load is not None:
                load.join(120)
    for r in readers:
        if r.error is not None:
            raise SystemExit(f"{r.name} reader failed: {r.error}")
    direct, routed = readers
    # skip the first second (connection set-up, start alignment)
    first = min(direct.arrivals) + 10**9
    both = sorted(t for t in direct.arrivals if t in routed.arrivals and t >= first)
    if not both:
        raise SystemExit("no block was received by both readers")

    def ms(xs: list[int]) -> list[float]:
        return [x / 1e6 for x in xs]

    d = ms([direct.arrivals[t] - (t + STRIDE) for t in both])
    via = ms([routed.arrivals[t] - (t + STRIDE) for t in both])
    added = ms([routed.arrivals[t] - direct.arrivals[t] for t in both])
    rows = [
        ["direct from the mock", f"{median(d):.1f}", f"{p99(d):.1f}", f"{max(d):.1f}"],
        ["through the router", f"{median(via):.1f}", f"{p99(via):.1f}", f"{max(via):.1f}"],
        ["added by the router", f"{median(added):.1f}", f"{p99(added):.1f}", f"{max(added):.1f}"],
    ]
    busy = f"; meanwhile {load.mb:.0f} MB of history through the router" if load else ""
    print(
        f"{len(CHANNELS)} channels x {RATE} Hz float32, block {STRIDE / 1e6:g} ms, "
        f"{seconds:g} s live, {len(both)} blocks compared; null-filled blocks: "
        f"direct {direct.null_blocks}, router {routed.null_blocks}{busy}\n"
    )
    print(table(["arrival - block end (ms)", "p50", "p99", "max"], rows))


if __name__ == "__main__":
    main()
