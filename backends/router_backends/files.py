"""``router-backend files DIR``: serve a recording (see ``backends/README.md, "Recorded data"``).

The recording is opened and validated at start-up (a bad DIR is a one-line error, exit
status 2); chunk files are memory-mapped when a stream first needs them.  Streams must lie
inside the recorded span: a recording has no live data and no open end.  Blocks missing from
the recording are served as null-filled blocks.  ``--retention`` works as for the mock.
"""

from __future__ import annotations

import argparse
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path

import pyarrow as pa

from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, FindArgs, StreamArgs
from router.protocol.errors import (
    InternalError,
    UnavailableError,
)
from router_backends.files_layout import RecordingError
from router_backends.files_reader import Recording
from router_backends.interface import BackendBase, BlockStream, CallContext, lookup, matches
from router_backends.retention import Retention

__all__ = ["FilesBackend", "configure_files", "run_files"]


class FilesBackend(BackendBase):
    """Answers from a recording directory; metadata is the recording's, whatever the time."""

    kind = "files"

    def __init__(self, path: str | Path, *, retention: Retention | None = None) -> None:
        self.recording = Recording(path)
        self.retention = retention or Retention()
        scopes: dict[str, set[str]] = {}
        for meta in self.recording.order:
            scopes.setdefault(meta.domain, set()).add(meta.subsystem)
        self._scopes = {d: sorted(s) for d, s in sorted(scopes.items())}

    def __repr__(self) -> str:
        return f"<FilesBackend {self.recording!r} retention={self.retention}>"

    def scopes(self) -> Mapping[str, Sequence[str]]:
        return self._scopes

    def find(self, args: FindArgs, ctx: CallContext) -> list[ChannelMeta]:
        return [m for m in self.recording.order if matches(args, m)]

    def describe(self, args: DescribeArgs, ctx: CallContext) -> list[ChannelMeta]:
        return lookup(self.recording.channels, args.channels)

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> Sequence[ChannelMeta]:
        """Describe, plus the span check (so GetFlightInfo refuses what DoGet would)."""
        metas = self.describe(DescribeArgs(args.channels, args.start, args.replay_id), ctx)
        rec = self.recording
        span = f"[{rec.start_ns}, {rec.end_ns})"
        if args.start is None:
            raise UnavailableError(
                f"a recording has no live data: {rec.path} covers GPS ns {span}; "
                "give a start and an end"
            )
        if args.end is None:
            raise UnavailableError(
                f"a recording has no open end: {rec.path} covers GPS ns {span}; give an end"
            )
        if args.start < rec.start_ns or args.end > rec.end_ns:
            raise UnavailableError(
                f"stream [{args.start}, {args.end}) is outside the recorded span {span} of "
                f"{rec.path}"
            )
        return metas

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        metas = self.stream_metadata(args, ctx)
        assert args.start is not None and args.end is not None
        schema, block_ns, blocks = self.recording.blocks(metas, args.start, args.end)

        def guarded() -> Generator[pa.RecordBatch, None, None]:
            try:
                yield from blocks
            except RecordingError as exc:
                raise InternalError(f"recording is damaged: {exc}") from None

        gen = guarded()
        return BlockStream(schema, block_ns, gen, close=gen.close)

    def close(self) -> None:
        self.recording.close()

    # ---------------------------------------------------------------------- command line

    description = "Serve a recording made by `router-backend record` (Arrow IPC files)."

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Options of ``router-backend files`` (the server core adds ``--url`` & co)."""
        parser.add_argument("dir", metavar="DIR", help="recording directory")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> FilesBackend:
        return cls(args.dir)  # a bad DIR: RecordingError, a ValueError


def configure_files(parser: argparse.ArgumentParser) -> None:
    """Options of ``router-backend files``: the server core's and the backend's."""
    from router_backends.cli import add_server_arguments

    parser.description = FilesBackend.description
    add_server_arguments(parser)
    FilesBackend.add_arguments(parser)


def run_files(args: argparse.Namespace) -> int:
    """Serve ``args.dir`` until SIGTERM/SIGINT; 2 on a bad recording or option."""
    from router_backends.cli import serve_backend_args

    return serve_backend_args("files", None, FilesBackend, args)
