"""``router-backend record --from URL --start S --end E CHANNEL... DIR``.

Records a bounded stream from any Arrakis server into the layout described in
``backends/README.md`` ("Recorded data"), speaking the protocol with plain pyarrow Flight
and our envelopes:

1. GetFlightInfo(Describe at ``start``) and DoGet of every endpoint: the channel metadata.
2. The span is widened to the grid of the lcm of all strides (start rounded down, end up),
   so every group's blocks tile it exactly.
3. Channels are grouped by stride (request order kept; ``--group-channels N`` caps the size
   of a group); per group GetFlightInfo(Stream) and DoGet of every endpoint, each endpoint's
   channels (from its ticket) becoming one stored group.
4. ``channels.arrow`` is written last; an interrupted recording is removed again.

Progress goes to stderr.  Nothing here imports the ``arrakis`` client.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.flight as flight

from router.protocol.arrow import metas_from_batches
from router.protocol.blocks import block_duration
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, Envelope, StreamArgs
from router.protocol.errors import ArrakisError, from_flight_error
from router.protocol.flightinfo import REUSE_CONNECTION_URI
from router_backends.files_layout import Manifest, RecordingError, RecordingWriter

__all__ = ["RecordCommand", "Recorder", "configure_record", "gps_ns", "record", "run_record"]

NS = 1_000_000_000
METADATA_TIMEOUT_S = 60.0


def gps_ns(text: str) -> int:
    """GPS seconds (decimal text, exact to the ns) as integer ns."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number of GPS seconds") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a number of GPS seconds")
    return int(value * NS)


class _Progress:
    """Throttled progress lines on a text stream."""

    def __init__(self, out: TextIO | None, every_s: float = 1.0) -> None:
        self.out = out
        self.every_s = every_s
        self._last = 0.0

    def __call__(self, text: str, *, force: bool = False) -> None:
        if self.out is None:
            return
        now = time.monotonic()
        if force or now - self._last >= self.every_s:
            self._last = now
            print(f"record: {text}", file=self.out, flush=True)


class Recorder:
    """One recording session against one server; whoever opens clients closes them."""

    def __init__(self, url: str, *, progress: TextIO | None = sys.stderr) -> None:
        self.url = url
        self.progress = _Progress(progress)
        self._clients: dict[str, flight.FlightClient] = {}

    def __repr__(self) -> str:
        return f"<Recorder {self.url} connections={len(self._clients)}>"

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ flight calls

    def _client(self, location: str) -> flight.FlightClient:
        client = self._clients.get(location)
        if client is None:
            client = self._clients[location] = flight.connect(location)
        return client

    def _endpoint_client(self, endpoint: flight.FlightEndpoint) -> tuple[str, flight.FlightClient]:
        if not endpoint.locations:
            return self.url, self._client(self.url)
        loc = endpoint.locations[0].uri.decode()
        if loc.startswith(REUSE_CONNECTION_URI.split(":", 1)[0] + ":"):
            return self.url, self._client(self.url)
        return loc, self._client(loc)

    def _info(self, env: Envelope) -> flight.FlightInfo:
        options = flight.FlightCallOptions(timeout=METADATA_TIMEOUT_S)
        try:
            return self._client(self.url).get_flight_info(
                flight.FlightDescriptor.for_command(env.encode()), options
            )
        except flight.FlightError as exc:
            raise from_flight_error(exc, f"{self.url}: {env.request} request") from None

    def describe(self, channels: Sequence[str], time_ns: int) -> list[ChannelMeta]:
        env = Envelope("Describe", DescribeArgs(tuple(channels), time_ns))
        info = self._info(env)
        found: dict[str, ChannelMeta] = {}
        for endpoint in info.endpoints:
            where, client = self._endpoint_client(endpoint)
            try:
                table = client.do_get(endpoint.ticket).read_all()
            except flight.FlightError as exc:
                raise from_flight_error(exc, f"{where}: Describe DoGet") from None
            for meta in metas_from_batches(table.to_batches()):
                found[meta.name] = meta
        missing = [c for c in channels if c not in found]
        if missing:
            raise RecordingError(f"{self.url} did not describe channel(s): {', '.join(missing)}")
        return [found[c] for c in channels]

    def stream_into(
        self,
        writer: RecordingWriter,
        metas: Sequence[ChannelMeta],
        label: str,
    ) -> None:
        """Stream ``metas`` over the writer's span; one stored group per endpoint."""
        by_name = {m.name: m for m in metas}
        args = StreamArgs(tuple(m.name for m in metas), writer.start_ns, writer.end_ns)
        info = self._info(Envelope("Stream", args))
        if not info.endpoints:
            raise RecordingError(f"{self.url}: the Stream answer has no endpoints")
        for n, endpoint in enumerate(info.endpoints, 1):
            names = _ticket_channels(endpoint.ticket.ticket)
            if names is None:
                if len(info.endpoints) != 1:
                    raise RecordingError(
                        f"{self.url}: cannot tell the channels of a Stream endpoint "
                        "(ticket is not a JSON envelope)"
                    )
                names = list(by_name)
            unknown = [c for c in names if c not in by_name]
            if unknown:
                raise RecordingError(
                    f"{self.url}: a Stream endpoint carries unrequested channel(s): {unknown}"
                )
            group_metas = [by_name[c] for c in names]
            block_ns = block_duration(m.stride or 0 for m in group_metas)
            group = writer.add_group(group_metas, block_ns)
            where, client = self._endpoint_client(endpoint)
            what = f"{label} endpoint {n}/{len(info.endpoints)} ({len(names)} channels)"
            span = writer.end_ns - writer.start_ns
            nbytes = 0
            try:
                reader = client.do_get(endpoint.ticket)
                for chunk in reader:
                    batch: pa.RecordBatch = chunk.data
                    group.write(batch)
                    nbytes += sum(c.values.nbytes for c in batch.columns[1:])
                    t_end = batch.column(0)[batch.num_rows - 1].as_py() + block_ns
                    pct = 100.0 * (t_end - writer.start_ns) / span
                    self.progress(
                        f"{what}: {pct:5.1f}% {group.blocks} blocks {nbytes / 1e6:.1f} MB"
                    )
            except flight.FlightError as exc:
                raise from_flight_error(exc, f"{where}: Stream DoGet") from None
            group.close()
            self.progress(
                f"{what}: done, {group.blocks} blocks {nbytes / 1e6:.1f} MB"
                + (f", {group.duplicates} duplicate blocks dropped" if group.duplicates else ""),
                force=True,
            )


def _ticket_channels(ticket: bytes) -> list[str] | None:
    try:
        doc = json.loads(ticket)
        names = doc["args"]["channels"]
    except (ValueError, KeyError, TypeError):
        return None
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        return None
    return names


def stride_groups(metas: Sequence[ChannelMeta], max_channels: int = 0) -> list[list[ChannelMeta]]:
    """Channels grouped by stride (first-seen order), each group cut to ``max_channels``."""
    by_stride: dict[int, list[ChannelMeta]] = {}
    for m in metas:
        by_stride.setdefault(m.stride or 0, []).append(m)
    out: list[list[ChannelMeta]] = []
    for members in by_stride.values():
        step = max_channels if max_channels > 0 else len(members)
        out.extend(members[i : i + step] for i in range(0, len(members), step))
    return out


def record(
    url: str,
    channels: Sequence[str],
    start_ns: int,
    end_ns: int,
    dest: str | Path,
    *,
    chunk_s: float = 256.0,
    group_channels: int = 0,
    progress: TextIO | None = sys.stderr,
) -> Manifest:
    """Record ``channels`` over ``[start_ns, end_ns)`` from ``url`` into ``dest``."""
    if not channels:
        raise RecordingError("no channels to record")
    if len(set(channels)) != len(channels):
        raise RecordingError("a channel is named twice")
    if start_ns >= end_ns:
        raise RecordingError(f"start {start_ns} is not before end {end_ns}")
    with Recorder(url, progress=progress) as rec:
        metas = rec.describe(channels, start_ns)
        no_stride = [m.name for m in metas if not m.stride]
        if no_stride:
            raise RecordingError(f"channel(s) without a stride cannot be recorded: {no_stride}")
        grid = block_duration(m.stride or 0 for m in metas)
        start = start_ns // grid * grid
        end = -(-end_ns // grid) * grid
        writer = RecordingWriter(dest, start, end, chunk_ns=round(chunk_s * NS), source=url)
        rec.progress(
            f"{len(metas)} channels, GPS ns [{start}, {end}) ({(end - start) / NS:g} s) into "
            f"{writer.root}",
            force=True,
        )
        try:
            groups = stride_groups(metas, group_channels)
            for i, group in enumerate(groups, 1):
                rec.stream_into(writer, group, f"stride group {i}/{len(groups)}")
            manifest = writer.finish([m.name for m in metas])
        except BaseException:
            writer.abort()
            raise
    rec.progress(f"done: {len(manifest.groups)} groups in {writer.root}", force=True)
    return manifest


# ---------------------------------------------------------------------- command line


def configure_record(parser: argparse.ArgumentParser) -> None:
    """Options of ``router-backend record``."""
    parser.description = (
        "Record a stream from an Arrakis server into Arrow IPC files that "
        "`router-backend files` serves."
    )
    parser.add_argument("--from", dest="from_url", required=True, metavar="URL", help="server")
    parser.add_argument("--start", required=True, help="GPS seconds")
    parser.add_argument("--end", required=True, help="GPS seconds")
    parser.add_argument(
        "--chunk-seconds",
        type=float,
        default=256.0,
        metavar="S",
        help="time span of one chunk file (default 256)",
    )
    parser.add_argument(
        "--group-channels",
        type=int,
        default=0,
        metavar="N",
        help="at most N channels per stored group (default: one group per stride)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("channels", nargs="+", metavar="CHANNEL")
    parser.add_argument("dir", metavar="DIR", help="new or empty directory")


def run_record(args: argparse.Namespace, *, err: TextIO | None = None) -> int:
    """Record; 0 on success, 1 on a server or data error, 2 on bad arguments."""
    from router_backends.cli import normalise_url

    out = err if err is not None else sys.stderr
    try:
        start, end = gps_ns(args.start), gps_ns(args.end)
        if args.chunk_seconds <= 0 or args.group_channels < 0:
            raise ValueError("--chunk-seconds must be > 0 and --group-channels >= 0")
    except ValueError as exc:
        print(f"router-backend record: error: {exc}", file=out)
        return 2
    try:
        record(
            normalise_url(args.from_url),
            args.channels,
            start,
            end,
            args.dir,
            chunk_s=args.chunk_seconds,
            group_channels=args.group_channels,
            progress=None if args.quiet else out,
        )
    except (ArrakisError, RecordingError, OSError, pa.ArrowException, flight.FlightError) as exc:
        print(f"router-backend record: error: {exc}", file=out)
        return 1
    return 0


class RecordCommand:
    """Record a stream from an Arrakis server into Arrow IPC files that
    `router-backend files` serves."""

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        configure_record(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return run_record(args)
