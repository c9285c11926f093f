"""The conformance kit passes our backends and fails broken ones, saying why."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pytest

from router.protocol.blocks import blocks_batch
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, StreamArgs
from router_backends.catalog import Catalog, load_toml
from router_backends.conformance import CHECKS, ConformanceError, check_backend
from router_backends.files import FilesBackend
from router_backends.interface import BlockStream, CallContext
from router_backends.mock import MockBackend
from router_backends.record import record
from router_backends.testing import serve_mock

from .conftest import CHANNELS_TOML, GPS0, NS

SPAN = (GPS0 * NS, (GPS0 + 4) * NS)


def test_the_mock_passes_every_check_live_included() -> None:
    report = check_backend(MockBackend(Catalog(load_toml(CHANNELS_TOML))), live=True)
    assert [o.check for o in report.outcomes] == list(CHECKS)
    report.assert_ok()
    assert "each after its end" in report.outcomes[-1].detail


def test_the_files_backend_passes(tmp_path: Path) -> None:
    channels = ["X1:TST-RAMP", "X1:TST-CONST_I32", "X1:SLOW-STRIDE"]
    with serve_mock(CHANNELS_TOML) as url:
        record(url, channels, *SPAN, tmp_path / "rec", chunk_s=2, progress=None)
    backend = FilesBackend(tmp_path / "rec")
    try:
        report = check_backend(backend, start_ns=SPAN[0], end_ns=SPAN[1], live=False)
    finally:
        backend.close()
    report.assert_ok()
    assert "refused" in report.outcomes[-1].detail


class OffGridMock(MockBackend):
    """Streams from the requested start itself, not from floor(start / D) * D."""

    kind = "off-grid"

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = super().stream(args, ctx)
        shift = (args.start or 0) % inner.block_ns

        def shifted() -> Iterator[pa.RecordBatch]:
            for chunk in inner.blocks:
                times = pa.compute.add(chunk.column(0), shift)
                yield chunk.set_column(0, chunk.schema.field(0), times)

        return replace(inner, blocks=shifted())


class KeyErrorMock(MockBackend):
    """Lets a KeyError out for an unknown channel (INTERNAL on the wire)."""

    kind = "key-error"

    def describe(self, args: DescribeArgs, ctx: CallContext) -> list[ChannelMeta]:
        return [self.catalog[name].meta_at(ctx.now_ns) for name in args.channels]


def _failed(report: object) -> dict[str, str]:
    return {o.check: o.detail for o in report.outcomes if not o.ok}  # type: ignore[attr-defined]


def test_a_backend_off_the_block_grid_fails_block_alignment() -> None:
    report = check_backend(OffGridMock(Catalog(load_toml(CHANNELS_TOML))))
    failed = _failed(report)
    assert list(failed) == ["block alignment"]
    assert "expected the block at" in failed["block alignment"]
    assert "floor(start / D) * D" in failed["block alignment"]
    with pytest.raises(ConformanceError, match=r"\[FAILED\] block alignment: stream from"):
        report.assert_ok()


def test_a_backend_raising_key_error_fails_error_classes() -> None:
    failed = _failed(check_backend(KeyErrorMock(Catalog(load_toml(CHANNELS_TOML)))))
    assert list(failed) == ["error classes"]
    assert "expected FlightUnavailableError" in failed["error classes"]
    assert "FlightInternalError" in failed["error classes"]
    assert "ChannelsNotAvailableError" in failed["error classes"]


class StuckLiveMock(MockBackend):
    """A live stream that, after its first block, waits 3 s for data without looking at
    ``ctx.cancelled()`` (the kit's server then stops; ``release`` ends it sooner)."""

    kind = "stuck"

    def __init__(self) -> None:
        super().__init__(Catalog(load_toml(CHANNELS_TOML)))
        self.release = threading.Event()

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = super().stream(args, ctx)
        if args.start is not None:
            return inner

        def stuck() -> Iterator[pa.RecordBatch]:
            yield next(inner.blocks)
            self.release.wait(3)

        return replace(inner, blocks=stuck())


def test_a_live_backend_deaf_to_cancellation_fails_cancellation() -> None:
    backend = StuckLiveMock()
    try:
        report = check_backend(backend, live=True, cancel_timeout_s=1.0)
    finally:
        backend.release.set()
    failed = _failed(report)
    assert "cancellation" in failed
    assert "not closed within 1 s of a cancel" in failed["cancellation"]


class StaleLiveMock(MockBackend):
    """'Live' streams that begin an hour ago."""

    kind = "stale"

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        if args.start is None:
            args = replace(args, start=ctx.now_ns - 3600 * NS)
        return super().stream(args, ctx)


def test_a_live_stream_from_the_past_fails_live_pacing() -> None:
    failed = _failed(check_backend(StaleLiveMock(Catalog(load_toml(CHANNELS_TOML))), live=True))
    assert list(failed) == ["live pacing"]
    assert "before now" in failed["live pacing"]


class InternalLiveRefusal(MockBackend):
    """Refuses live streams with a plain exception (INTERNAL) instead of UnavailableError."""

    kind = "bad-live"

    def stream_metadata(self, args: StreamArgs, ctx: CallContext) -> list[ChannelMeta]:
        if args.start is None:
            raise RuntimeError("no live data here")
        return list(super().stream_metadata(args, ctx))


def test_refusing_live_with_the_wrong_error_class_fails() -> None:
    failed = _failed(check_backend(InternalLiveRefusal(Catalog(load_toml(CHANNELS_TOML)))))
    assert set(failed) == {"cancellation", "live pacing"}
    assert "FlightInternalError" in failed["live pacing"]
    assert "raises UnavailableError" in failed["live pacing"]


class WrongLengthMock(MockBackend):
    """Blocks one sample short for every channel."""

    kind = "short"

    def stream(self, args: StreamArgs, ctx: CallContext) -> BlockStream:
        inner = super().stream(args, ctx)

        def short() -> Iterator[pa.RecordBatch]:
            for chunk in inner.blocks:
                times = chunk.column(0).to_pylist()
                cols = {
                    name: chunk.column(name).flatten().slice(0, len(times) * (n - 1))
                    for name, n in _lengths(chunk).items()
                }
                samples = {name: n - 1 for name, n in _lengths(chunk).items()}
                yield blocks_batch(chunk.schema, times, cols, samples)

        return replace(inner, blocks=short())


def _lengths(chunk: pa.RecordBatch) -> dict[str, int]:
    return {name: len(chunk.column(name)[0].values) for name in chunk.schema.names[1:]}


def test_short_blocks_fail_block_alignment() -> None:
    failed = _failed(check_backend(WrongLengthMock(Catalog(load_toml(CHANNELS_TOML)))))
    assert "block alignment" in failed
    assert "a block holds" in failed["block alignment"]
