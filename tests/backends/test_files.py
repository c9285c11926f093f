"""`router-backend record` + `router-backend files`: record from the mock, serve the files,
read them back with the real ``arrakis`` client and raw pyarrow."""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import arrakis
import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from router.protocol.envelope import Envelope, StreamArgs
from router_backends.files import FilesBackend, configure_files, run_files
from router_backends.files_layout import CHANNELS_FILE, RecordingError, chunk_name
from router_backends.files_reader import Recording
from router_backends.record import configure_record, record, run_record
from router_backends.retention import Retention
from router_backends.testing import serve_backend, serve_mock

pytestmark = pytest.mark.integration

NS = 1_000_000_000
GPS0 = 1_400_000_000
SPAN_S = 8
CHUNK_S = 2.0
CHANNELS_TOML = """\
[common]
data_type = "float32"
stride = 62500000
max_latency = 1000000000
publisher = "FILES_TEST"

["X1:TST-A"]
sample_rate = 256

["X1:TST-B"]
sample_rate = 1024
data_type = "float64"

["X1:TST-C"]
sample_rate = 16
data_type = "int32"
stride = 250000000

["X1:TST-D"]
sample_rate = 2048

["X1:PEM-E"]
sample_rate = 512
data_type = "int64"
stride = 125000000
"""
ALL = ["X1:TST-A", "X1:TST-B", "X1:TST-C", "X1:TST-D", "X1:PEM-E"]


@pytest.fixture(scope="module")
def toml(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files-toml") / "channels.toml"
    path.write_text(CHANNELS_TOML)
    return path


@pytest.fixture(scope="module")
def mock_url(toml: Path) -> Iterator[str]:
    with serve_mock(toml) as url:
        yield url


@pytest.fixture(scope="module")
def recording(mock_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every channel over 8 s, 2 s chunks, at most 2 channels per group (4 groups)."""
    dest = tmp_path_factory.mktemp("files-rec") / "rec"
    record(
        mock_url, ALL, GPS0 * NS, (GPS0 + SPAN_S) * NS, dest,
        chunk_s=CHUNK_S, group_channels=2, progress=None,
    )  # fmt: skip
    return dest


@pytest.fixture(scope="module")
def files_url(recording: Path) -> Iterator[str]:
    with serve_backend(FilesBackend(recording)) as server:
        yield server.url


def _same_block(got: arrakis.SeriesBlock, want: arrakis.SeriesBlock, channels: list[str]) -> None:
    assert got.t0 == want.t0
    assert got.duration == want.duration
    for name in channels:
        a, b = got[name].data, want[name].data
        assert not np.ma.is_masked(a), name
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


# ---------------------------------------------------------------------- the layout


def test_layout_groups_and_chunks(recording: Path) -> None:
    rec = Recording(recording)
    assert (rec.start_ns, rec.end_ns) == (GPS0 * NS, (GPS0 + SPAN_S) * NS)
    groups = {g.name: (g.block_ns, [m.name for m in g.channels]) for g in rec.manifest.groups}
    assert groups == {
        "g0000": (62_500_000, ["X1:TST-A", "X1:TST-B"]),
        "g0001": (62_500_000, ["X1:TST-D"]),
        "g0002": (250_000_000, ["X1:TST-C"]),
        "g0003": (125_000_000, ["X1:PEM-E"]),
    }
    assert [m.name for m in rec.order] == ALL
    names = sorted(p.name for p in (recording / "g0000").iterdir())
    assert names == [chunk_name((GPS0 + 2 * i) * NS) for i in range(4)]


def test_fast_path_is_a_zero_copy_slice_of_the_memory_map(recording: Path) -> None:
    rec = Recording(recording)
    metas = [rec.channels["X1:TST-A"], rec.channels["X1:TST-B"]]
    schema, block_ns, blocks = rec.blocks(metas, GPS0 * NS, GPS0 * NS + 2 * 62_500_000)
    first = next(blocks)
    blocks.close()
    stored = rec.chunk(rec.groups["g0000"], GPS0 * NS).batches[0]
    assert first.schema == schema and block_ns == 62_500_000
    assert first.column(1).values.buffers()[1].address == (
        stored.column(1).values.buffers()[1].address
    )


# ---------------------------------------------------------------------- the real client


@pytest.mark.parametrize(
    "channels",
    [
        ALL,
        ["X1:TST-A"],  # part of a group
        ["X1:TST-A", "X1:TST-B"],  # a whole group
        ["X1:TST-C"],  # a 250 ms group
        ["X1:TST-A", "X1:TST-C", "X1:PEM-E"],  # three groups, three strides: re-blocked
        ["X1:TST-B", "X1:TST-D"],  # two groups, same stride
    ],
)
def test_fetch_equals_the_source(mock_url: str, files_url: str, channels: list[str]) -> None:
    start, end = GPS0 + 1, GPS0 + 7
    got = arrakis.Client(files_url).fetch(channels, start, end)
    want = arrakis.Client(mock_url).fetch(channels, start, end)
    _same_block(got, want, channels)


def test_fetch_unaligned_start_and_end(mock_url: str, files_url: str) -> None:
    channels = ["X1:TST-A", "X1:TST-C"]
    got = arrakis.Client(files_url).fetch(channels, GPS0 + 1.5, GPS0 + 6.3)
    want = arrakis.Client(mock_url).fetch(channels, GPS0 + 1.5, GPS0 + 6.3)
    assert got.t0 == GPS0 + 1.5  # on the 250 ms grid
    _same_block(got, want, channels)


def test_whole_recording(mock_url: str, files_url: str) -> None:
    got = arrakis.Client(files_url).fetch(ALL, GPS0, GPS0 + SPAN_S)
    want = arrakis.Client(mock_url).fetch(ALL, GPS0, GPS0 + SPAN_S)
    assert got.duration == SPAN_S
    _same_block(got, want, ALL)


def test_describe_find_count(mock_url: str, files_url: str) -> None:
    files, mock = arrakis.Client(files_url), arrakis.Client(mock_url)
    assert files.describe(ALL) == mock.describe(ALL)
    assert [c.name for c in files.find("X1:TST")] == ALL[:4]
    assert files.count() == 5
    assert files.count("X1:", data_type=["int32", "int64"]) == 2
    assert files.count(min_rate=1000) == 2
    assert files.count(publisher=["nobody"]) == 0
    with pytest.raises(flight.FlightUnavailableError, match=r"X1:TST-NOPE"):
        files.describe(["X1:TST-NOPE"])


def test_server_info_and_scope_map(files_url: str) -> None:
    client = flight.connect(files_url)
    try:
        info = json.loads(
            next(iter(client.do_action(flight.Action("server-info", b"")))).body.to_pybytes()
        )
        scopes = json.loads(
            next(iter(client.do_action(flight.Action("scope-map", b"")))).body.to_pybytes()
        )
    finally:
        client.close()
    assert info["backend"] == "files"
    assert info["domains"] == ["X1"]
    [entry] = scopes["endpoints"].values()
    assert entry["scopes"] == {"X1": [{"subsystem": "PEM"}, {"subsystem": "TST"}]}


# ---------------------------------------------------------------------- gaps


def test_gaps_in_the_recording_come_back_masked(
    mock_url: str, recording: Path, tmp_path: Path
) -> None:
    gappy = tmp_path / "gappy"
    shutil.copytree(recording, gappy)
    (gappy / "g0000" / chunk_name((GPS0 + 2) * NS)).unlink()  # A, B: [2 s, 4 s)
    (gappy / "g0002" / chunk_name((GPS0 + 6) * NS)).unlink()  # C: the tail [6 s, 8 s)
    channels = ["X1:TST-A", "X1:TST-C"]
    want = arrakis.Client(mock_url).fetch(channels, GPS0, GPS0 + SPAN_S)
    with serve_backend(FilesBackend(gappy)) as server:
        got = arrakis.Client(server.url).fetch(channels, GPS0, GPS0 + SPAN_S)
    assert got.duration == SPAN_S  # the tail gap is served, not cut off
    for name, (lo, hi) in {"X1:TST-A": (2, 4), "X1:TST-C": (6, 8)}.items():
        rate = got[name].sample_rate
        data = got[name].data
        mask = np.ma.getmaskarray(data)
        gap = np.zeros(len(data), dtype=bool)
        gap[lo * rate : hi * rate] = True
        np.testing.assert_array_equal(mask, gap, err_msg=name)
        np.testing.assert_array_equal(
            np.ma.getdata(data)[~gap], np.asarray(want[name].data)[~gap], err_msg=name
        )


def test_blocks_dropped_by_the_source_are_gaps(toml: Path, tmp_path: Path) -> None:
    with serve_mock(toml, faults="drop=8") as url:
        record(url, ["X1:TST-A"], GPS0 * NS, (GPS0 + 2) * NS, tmp_path / "r", progress=None)
    with serve_mock(toml) as clean_url:
        want = arrakis.Client(clean_url).fetch(["X1:TST-A"], GPS0, GPS0 + 2)["X1:TST-A"].data
    with serve_backend(FilesBackend(tmp_path / "r")) as server:
        got = arrakis.Client(server.url).fetch(["X1:TST-A"], GPS0, GPS0 + 2)["X1:TST-A"].data
    blocks = np.ma.getmaskarray(got).reshape(-1, 16).all(axis=1)  # 16 samples per block
    assert np.flatnonzero(blocks).tolist() == [8, 16, 24]
    assert not np.ma.getmaskarray(got).reshape(-1, 16)[~blocks].any()
    kept = ~np.ma.getmaskarray(got)
    np.testing.assert_array_equal(np.ma.getdata(got)[kept], np.asarray(want)[kept])


# ---------------------------------------------------------------------- refusals


def _stream(url: str, start: int | None, end: int | None, channels: tuple[str, ...]) -> None:
    client = flight.connect(url)
    try:
        cmd = Envelope("Stream", StreamArgs(channels, start, end)).encode()
        client.get_flight_info(flight.FlightDescriptor.for_command(cmd))
    finally:
        client.close()


@pytest.mark.parametrize(
    ("start", "end", "text"),
    [
        (None, None, "no live data"),
        (GPS0 * NS, None, "no open end"),
        ((GPS0 - 1) * NS, (GPS0 + 1) * NS, "outside the recorded span"),
        (GPS0 * NS, (GPS0 + SPAN_S + 1) * NS, "outside the recorded span"),
    ],
)
def test_streams_outside_the_recording_are_refused(
    files_url: str, start: int | None, end: int | None, text: str
) -> None:
    with pytest.raises(flight.FlightUnavailableError, match=text):
        _stream(files_url, start, end, ("X1:TST-A",))


def test_retention_refusal(recording: Path) -> None:
    # the recording is years old: a server keeping the last 600 s refuses it
    recent = FilesBackend(recording, retention=Retention(0, 600))
    with (
        serve_backend(recent) as server,
        pytest.raises(flight.FlightUnavailableError, match="retention"),
    ):
        arrakis.Client(server.url).fetch(["X1:TST-A"], GPS0, GPS0 + 1)
    with serve_backend(FilesBackend(recording, retention=Retention(60, float("inf")))) as server:
        got = arrakis.Client(server.url).fetch(["X1:TST-A"], GPS0, GPS0 + 1)
        assert len(got["X1:TST-A"].data) == 256


@pytest.mark.parametrize(
    ("setup", "text"),
    [
        ("missing", "no such directory"),
        ("file", "not a directory"),
        ("empty", "not a recording"),
        ("garbage", "not a readable Arrow IPC file"),
        ("no-group", "group directory is missing"),
    ],
)
def test_bad_dir_is_a_clear_error(recording: Path, tmp_path: Path, setup: str, text: str) -> None:
    target = tmp_path / "bad"
    if setup == "file":
        target.write_text("x")
    elif setup == "empty":
        target.mkdir()
    elif setup == "garbage":
        target.mkdir()
        (target / CHANNELS_FILE).write_bytes(b"not arrow")
    elif setup == "no-group":
        shutil.copytree(recording, target)
        shutil.rmtree(target / "g0001")
    with pytest.raises(RecordingError, match=text):
        FilesBackend(target)


def test_run_files_reports_a_bad_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    configure_files(parser)
    args = parser.parse_args([str(tmp_path / "nothing"), "--url", "grpc://127.0.0.1:0"])
    assert run_files(args) == 2
    err = capsys.readouterr().err
    assert "router-backend files: error:" in err and "no such directory" in err
    assert "Traceback" not in err


def test_damaged_chunk_fails_the_stream_clearly(recording: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(recording, damaged)
    (damaged / "g0002" / chunk_name((GPS0 + 2) * NS)).write_bytes(b"garbage")
    with (
        serve_backend(FilesBackend(damaged)) as server,
        pytest.raises(flight.FlightInternalError, match="recording is damaged"),
    ):
        arrakis.Client(server.url).fetch(["X1:TST-C"], GPS0, GPS0 + 4)


# ---------------------------------------------------------------------- record CLI


def _record_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    configure_record(parser)
    return parser.parse_args(argv)


def test_record_cli(mock_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dest = tmp_path / "cli"
    argv = ["--from", mock_url, "--start", f"{GPS0}.03", "--end", f"{GPS0 + 1}"]
    assert run_record(_record_args([*argv, "X1:TST-C", "X1:TST-A", str(dest)])) == 0
    err = capsys.readouterr().err
    assert "record: 2 channels" in err and "record: done" in err
    rec = Recording(dest)
    # widened to the 250 ms grid of the lcm of all strides
    assert (rec.start_ns, rec.end_ns) == (GPS0 * NS, (GPS0 + 1) * NS)
    assert [m.name for m in rec.order] == ["X1:TST-C", "X1:TST-A"]
    # an existing recording is never overwritten
    assert run_record(_record_args([*argv, "X1:TST-A", str(dest)])) == 1
    assert "directory is not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "status", "text"),
    [
        (["--start", "soon", "--end", "2"], 2, "not a number of GPS seconds"),
        (["--start", str(GPS0), "--end", str(GPS0 + 1), "--chunk-seconds", "0"], 2, "chunk"),
        (["--start", str(GPS0 + 1), "--end", str(GPS0)], 1, "not before"),
    ],
)
def test_record_bad_arguments(
    mock_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    status: int,
    text: str,
) -> None:
    args = _record_args(["--from", mock_url, *argv, "X1:TST-A", str(tmp_path / "x")])
    assert run_record(args) == status
    assert text in capsys.readouterr().err


def test_record_unknown_channel_leaves_nothing(
    mock_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "unknown"
    args = ["--from", mock_url, "--start", str(GPS0), "--end", str(GPS0 + 1)]
    assert run_record(_record_args([*args, "X1:TST-A", "X1:TST-NOPE", str(dest)])) == 1
    assert "X1:TST-NOPE" in capsys.readouterr().err
    assert not (dest / CHANNELS_FILE).exists()


def test_recorded_batches_are_plain_ipc(recording: Path) -> None:
    """The chunk files are ordinary Arrow IPC files any Arrow reader can open."""
    path = recording / "g0000" / chunk_name(GPS0 * NS)
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.num_rows == int(CHUNK_S * 16)
    assert table.schema.names == ["time", "X1:TST-A", "X1:TST-B"]


# ---------------------------------------------------------------------- upstream source


@contextlib.contextmanager
def _upstream_mock(toml: Path) -> Iterator[str]:
    """`arrakis-server mock` (it logs `URL: grpc://HOST:PORT` on stderr once bound)."""
    exe = Path(sys.executable).with_name("arrakis-server")
    argv = [str(exe), "-u", "grpc://127.0.0.1:0", "mock", str(toml)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    drain: threading.Thread | None = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        url = ""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stderr, selectors.EVENT_READ)
            while not url and time.monotonic() < deadline and proc.poll() is None:
                if sel.select(0.5):
                    line = proc.stderr.readline()
                    if " URL: " in line:
                        url = line.rsplit("URL: ", 1)[1].strip()
        assert url, "arrakis-server did not report its URL"
        drain = threading.Thread(target=proc.stderr.read, daemon=True)
        drain.start()
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if drain is not None:
            drain.join(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.slow
@pytest.mark.skipif(
    not Path(sys.executable).with_name("arrakis-server").exists(), reason="no arrakis-server"
)
def test_record_from_upstream_mock(toml: Path, tmp_path: Path) -> None:
    channels = ["X1:TST-A", "X1:TST-C"]
    with _upstream_mock(toml) as url:
        record(url, channels, GPS0 * NS, (GPS0 + 2) * NS, tmp_path / "up", progress=None)
    stored = {}
    for group in ("g0000", "g0001"):
        path = tmp_path / "up" / group / chunk_name(GPS0 * NS)
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        for name in table.schema.names[1:]:
            stored[name] = table.column(name).combine_chunks().flatten().to_numpy()
    with serve_backend(FilesBackend(tmp_path / "up")) as server:
        got = arrakis.Client(server.url).fetch(channels, GPS0, GPS0 + 2)
    for name in channels:
        np.testing.assert_array_equal(np.asarray(got[name].data), stored[name], err_msg=name)
    assert len(stored["X1:TST-A"]) == 512 and len(stored["X1:TST-C"]) == 32
