"""Router throughput and GetFlightInfo latency vs direct reads and a bare relay.

All servers are subprocesses of this one process tree; runs are interleaved (direct, router,
direct, router, ...) so that machine noise hits both sides alike. Figures are medians; the
ratio is router / baseline, measured in this run.

1. the real `arrakis` client's fetch directly from a mock vs through the router (proxy mode),
   and through the bare relay for reference (what any extra hop costs the client);
2. raw pyarrow DoGet through the router vs through a bare pyarrow relay (bench/relay.py);
3. GetFlightInfo latency for a 100-channel Describe and Stream through the router.

    python bench/throughput.py [--reps 5] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pyarrow.flight as flight
from _harness import (
    BIN,
    CASES,
    FAST,
    ROOT,
    SLOW,
    START_S,
    envelope,
    median,
    mock_behind_router,
    p99,
    process,
    stream_cmd,
    table,
    timed,
    write_inputs,
)


def client_fetch(url: str, channels: list[str], seconds: int) -> int:
    import arrakis

    block = arrakis.Client(url).fetch(channels, START_S, START_S + seconds)
    return sum(block[c].data.nbytes for c in channels)


def raw_doget(url: str, command: bytes) -> int:
    client = flight.connect(url)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        total = 0
        for endpoint in info.endpoints:
            reader = client.do_get(endpoint.ticket)
            for chunk in reader:
                for column in chunk.data.columns[1:]:
                    total += column.values.nbytes
        return total
    finally:
        client.close()


def bench_pair(label: str, reps: int, fns: dict[str, object]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            secs, nbytes = timed(fn)  # type: ignore[arg-type]
            rates[name].append(int(nbytes) / secs / 1e6)  # type: ignore[call-overload]
    return rates


def info_latency(url: str, command: bytes, n: int) -> list[float]:
    client = flight.connect(url)
    try:
        desc = flight.FlightDescriptor.for_command(command)
        client.get_flight_info(desc)  # warm: connection, Describe cache
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            client.get_flight_info(desc)
            out.append((time.perf_counter() - t0) * 1e3)
        return out
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1 rep, short ranges")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    cases = [(lbl, ch, 8 if args.quick else s) for lbl, ch, s in CASES]

    with tempfile.TemporaryDirectory(prefix="arrakis-bench-") as tmpdir:
        tmp = Path(tmpdir)
        toml = write_inputs(tmp)
        with mock_behind_router(tmp, toml) as (mock, router):
            relay_argv = [
                str(BIN / "python"),
                str(ROOT / "bench" / "relay.py"),
                "--downstream",
                mock,
            ]
            with process("relay", relay_argv) as relay:
                # warm-up, not measured: the first fetch in this process imports the client
                # (and gpstime's leap-second download attempts), opens connections and fills
                # the router's Describe cache
                for url in (mock, router, relay):
                    raw_doget(url, stream_cmd(FAST[:1], 1))
                for url in (mock, router, relay):
                    client_fetch(url, FAST[:1], 1)
                rows1, rows2 = [], []
                for label, channels, seconds in cases:
                    r = bench_pair(
                        label,
                        reps,
                        {
                            "direct": lambda c=channels, s=seconds: client_fetch(mock, c, s),
                            "relay": lambda c=channels, s=seconds: client_fetch(relay, c, s),
                            "router": lambda c=channels, s=seconds: client_fetch(router, c, s),
                        },
                    )
                    d, b, x = median(r["direct"]), median(r["relay"]), median(r["router"])
                    rows1.append(
                        [label, f"{d:.1f}", f"{b:.1f}", f"{x:.1f}", f"{b / d:.2f}", f"{x / d:.2f}"]
                    )
                    print("client fetch", label, rows1[-1], flush=True)
                for label, channels, seconds in cases:
                    cmd = stream_cmd(channels, seconds)
                    r = bench_pair(
                        label,
                        reps,
                        {
                            "direct": lambda c=cmd: raw_doget(mock, c),
                            "relay": lambda c=cmd: raw_doget(relay, c),
                            "router": lambda c=cmd: raw_doget(router, c),
                        },
                    )
                    d, b, x = median(r["direct"]), median(r["relay"]), median(r["router"])
                    rows2.append([label, f"{d:.1f}", f"{b:.1f}", f"{x:.1f}", f"{x / b:.2f}"])
                    print("raw doget", label, rows2[-1], flush=True)
                hundred = SLOW[:100]
                start = START_S * 10**9
                n = 50 if args.quick else 300
                lat_d = info_latency(
                    router, envelope("Describe", channels=hundred, time=start, replay_id=None), n
                )
                lat_s = info_latency(router, stream_cmd(hundred, 64), n)
    print()
    print("### Client fetch, direct from the mock vs through the router (MB/s of samples)\n")
    print(table(["case", "direct", "bare relay", "router", "relay/direct", "router/direct"], rows1))
    print("\n### Raw pyarrow DoGet (MB/s of samples)\n")
    print(table(["case", "direct", "bare relay", "router", "router/relay"], rows2))
    print("\n### GetFlightInfo latency through the router, 100 channels (ms)\n")
    print(
        table(
            ["request", "median", "p99"],
            [
                ["Describe", f"{median(lat_d):.2f}", f"{p99(lat_d):.2f}"],
                ["Stream", f"{median(lat_s):.2f}", f"{p99(lat_s):.2f}"],
            ],
        )
    )


if __name__ == "__main__":
    main()
