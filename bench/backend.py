"""Stream throughput of `router-backend mock` vs upstream `arrakis-server mock`.

Both mocks load the same channel TOML (upstream's format: a `[common]` table, one table per
channel) and answer the same bounded Stream request; the stream is read with plain pyarrow
(GetFlightInfo + DoGet of every endpoint) so the `arrakis` client's own cost is not
measured. Runs are interleaved (ours, upstream, ours, ...); figures are medians of MB/s of
samples (list values only, not times or offsets); the ratio is ours / upstream.

    python bench/backend.py [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.flight as flight
from _harness import BIN, CASES, START_S, median, process, stream_cmd, table, timed, write_inputs

from router_backends.testing import upstream_url_line

TARGET = 5.0
#: decode batches on the calling thread: with hundreds of columns per one-row batch the
#: thread-pool hand-off costs more than the decoding (applies to both servers alike)
READ_OPTIONS = flight.FlightCallOptions(read_options=pa.ipc.IpcReadOptions(use_threads=False))


@contextlib.contextmanager
def upstream_mock(toml: Path, timeout: float = 60.0) -> Iterator[str]:
    """`arrakis-server -u grpc://127.0.0.1:0 mock TOML`; yield its URL; always stopped."""
    argv = [str(BIN / "arrakis-server"), "-u", "grpc://127.0.0.1:0", "mock", str(toml)]
    with process(
        "arrakis-server", argv, announce=upstream_url_line, stream="stderr", start_timeout=timeout
    ) as url:
        yield url


FILES_MAIN = (
    "import argparse, sys\n"
    "from router_backends.logs import configure_logging\n"
    "from router_backends.files import configure_files, run_files\n"
    "configure_logging('warning')\n"
    "p = argparse.ArgumentParser()\n"
    "configure_files(p)\n"
    "sys.exit(run_files(p.parse_args(sys.argv[1:])))\n"
)


@contextlib.contextmanager
def files_server(source: str, channels: list[str], seconds: int, root: Path) -> Iterator[str]:
    """Record the case's request from ``source`` into ``root``, serve it with
    `router-backend files` in a subprocess; yield its URL."""
    from router_backends.record import record

    start = START_S * 10**9
    record(source, channels, start, start + seconds * 10**9, root, progress=None)
    argv = [str(BIN / "python"), "-c", FILES_MAIN, str(root), "--url", "grpc://127.0.0.1:0"]
    with process("router-backend files", argv) as url:
        yield url


def raw_doget(url: str, command: bytes) -> int:
    """Bytes of samples in the whole stream, read with plain pyarrow.

    Each stream is read with ``read_all`` (batches decoded in C++, no Python per batch);
    its sample bytes are rows x the sample bytes of one row, every block of a stream
    having the same shape.
    """
    client = flight.connect(url)
    try:
        info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        total = 0
        for endpoint in info.endpoints:
            data = client.do_get(endpoint.ticket, READ_OPTIONS).read_all()
            if data.num_rows:
                first = data.slice(0, 1).combine_chunks()
                row_bytes = sum(
                    len(col.chunk(0).flatten()) * col.type.value_type.bit_width // 8
                    for col in first.columns[1:]
                )
                total += data.num_rows * row_bytes
        return total
    finally:
        client.close()


def interleaved(reps: int, fns: dict[str, Callable[[], int]]) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            secs, nbytes = timed(fn)
            rates[name].append(int(nbytes) / secs / 1e6)  # type: ignore[call-overload]
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 rep, 8 s per case")
    args = parser.parse_args()
    reps = 1 if args.quick else args.reps
    cases = [(lbl, ch, 8 if args.quick else s) for lbl, ch, s in CASES]
    rows = []
    with tempfile.TemporaryDirectory(prefix="arrakis-bench-") as tmpdir:
        toml = write_inputs(Path(tmpdir))
        ours_argv = [str(BIN / "router-backend"), "mock", "--url", "grpc://127.0.0.1:0", str(toml)]
        with process("router-backend mock", ours_argv) as ours, upstream_mock(toml) as upstream:
            for i, (label, channels, seconds) in enumerate(cases):
                rec = Path(tmpdir) / f"rec{i}"
                with files_server(ours, channels, seconds, rec) as files:
                    rows.append(run_case(label, channels, seconds, reps, ours, upstream, files))
                shutil.rmtree(rec)
                if args.quick:
                    rows[-1][0] = f"{label.split(',')[0]}, {seconds} s"
                print("stream", rows[-1], flush=True)
    print()
    print(f"### Mock stream throughput, raw pyarrow DoGet (MB/s of samples, median of {reps})\n")
    print(
        table(
            ["case", "router-backend mock", "arrakis-server mock", "ratio", "files (recorded)"],
            rows,
        )
    )


def run_case(
    label: str, channels: list[str], seconds: int, reps: int, ours: str, upstream: str, files: str
) -> list[str]:
    cmd = stream_cmd(channels, seconds)
    for url in (ours, upstream, files):  # warm: connections, caches, first-call imports
        raw_doget(url, cmd)
    r = interleaved(
        reps,
        {
            "ours": lambda c=cmd: raw_doget(ours, c),  # type: ignore[misc]
            "upstream": lambda c=cmd: raw_doget(upstream, c),  # type: ignore[misc]
            "files": lambda c=cmd: raw_doget(files, c),  # type: ignore[misc]
        },
    )
    o, u, f = median(r["ours"]), median(r["upstream"]), median(r["files"])
    flag = "" if o / u >= TARGET else f" (below the {TARGET:g}x target)"
    return [label, f"{o:.1f}", f"{u:.1f}", f"{o / u:.1f}x{flag}", f"{f:.1f}"]


if __name__ == "__main__":
    main()
