"""Publishing variant (in-process) and the ``router-backend`` command as a subprocess."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import arrakis
import numpy as np
import pyarrow.flight as flight
import pytest
from arrakis.channel import Channel
from arrakis.publish import Publisher

from router.protocol.envelope import Envelope, PublishArgs, StreamArgs
from router_backends.testing import MockProcess, mock_process, serve_mock

from .conftest import CHANNELS_TOML, GPS0, NS

pytestmark = pytest.mark.integration
PUBLISHERS = Path(__file__).with_name("publishers.toml")


@pytest.fixture(scope="module")
def publishing_url() -> Iterator[str]:
    with serve_mock(CHANNELS_TOML, publishers=PUBLISHERS) as url:
        yield url


def test_publish_properties(publishing_url: str) -> None:
    raw = flight.connect(publishing_url)
    env = Envelope("Publish", PublishArgs("X1-dyn"))
    info = raw.get_flight_info(flight.FlightDescriptor.for_command(env.encode()))
    table = raw.do_get(info.endpoints[0].ticket).read_all()
    assert dict(table.column("properties")[0].as_py()) == {
        "compression.type": "lz4",
        "bootstrap.servers": "127.0.0.1:9",
    }
    with pytest.raises(flight.FlightUnauthorizedError, match="publisher 'nobody' is not known"):
        raw.do_get(flight.Ticket(Envelope("Publish", PublishArgs("nobody")).encode())).read_all()
    raw.close()
    server_info = arrakis.Client(publishing_url)
    # X1:CHG-RATE moved to publisher OTHER at GPS 1400000200 (before now)
    assert server_info.count(publisher=["TEST_X1"]) == 5


def test_static_publisher_channels_have_partitions(publishing_url: str) -> None:
    chans = list(arrakis.Client(publishing_url).find("X1:TST", publisher=["TEST_X1"]))
    assert [(c.partition_id, c.partition_index) for c in chans] == [
        ("TEST_X1_TST_0", 2),
        ("TEST_X1_TST_0", 3),
        ("TEST_X1_TST_0", 0),
        ("TEST_X1_TST_0", 1),
    ]


def test_dynamic_registration_with_the_real_publisher(publishing_url: str) -> None:
    channels = [
        Channel(f"X1:DYN-C{i}", data_type=np.dtype("float32"), sample_rate=256) for i in range(3)
    ]
    pub = Publisher("X1-dyn", publishing_url, token=False)
    pub.register(channels)
    got = {name: (c.partition_id, c.partition_index, c.stride) for name, c in pub.channels.items()}
    assert got == {
        "X1:DYN-C0": ("X1-dyn_DYN_0", 0, 62_500_000),
        "X1:DYN-C1": ("X1-dyn_DYN_0", 1, 62_500_000),
        "X1:DYN-C2": ("X1-dyn_DYN_1", 0, 62_500_000),
    }
    # registered channels stream like any other
    block = arrakis.Client(publishing_url).fetch(["X1:DYN-C1"], GPS0, GPS0 + 1)
    assert block.data["X1:DYN-C1"].size == 256
    with pytest.raises(flight.FlightUnauthorizedError, match="may not register channels"):
        Publisher("X1-static", publishing_url, token=False).register(
            [Channel("X1:DYN-Z", data_type=np.dtype("float32"), sample_rate=256)]
        )


def _stream_table(url: str, start_s: int, seconds: int) -> object:
    raw = flight.connect(url)
    env = Envelope(
        "Stream",
        StreamArgs(
            ("H1:GDS-CALIB_STRAIN", "L1:PEM-CS_ACC_BSC1_ITMY_X_DQ", "H1:GDS-CALIB_STATE_VECTOR"),
            start_s * NS,
            (start_s + seconds) * NS,
        ),
    )
    try:
        return raw.do_get(flight.Ticket(env.encode())).read_all()
    finally:
        raw.close()


def test_two_processes_return_identical_data() -> None:
    with mock_process() as a, mock_process() as b, serve_mock() as c:
        assert a != b and a.startswith("grpc://127.0.0.1:")
        ta, tb, tc = (_stream_table(u, GPS0 + 1234, 2) for u in (a, b, c))
    assert ta.num_rows == 32
    assert ta.equals(tb) and ta.equals(tc)


def test_process_exit_fault_and_clean_sigterm() -> None:
    with MockProcess(["--faults", "exit=5", str(CHANNELS_TOML)]) as proc:
        client = arrakis.Client(proc.url)
        assert client.count() == 6
        raw = flight.connect(proc.url)
        env = Envelope("Stream", StreamArgs(("X1:TST-RAMP",), GPS0 * NS, (GPS0 + 2) * NS))
        try:
            with pytest.raises(flight.FlightUnavailableError, match="server exiting after 5"):
                raw.do_get(flight.Ticket(env.encode())).read_all()
        finally:
            raw.close()
        proc.process.wait(10)  # type: ignore[union-attr]
        assert proc.returncode == 3
        assert "fault_exit" in proc.log_text() and "status=3" in proc.log_text()
    with MockProcess([str(CHANNELS_TOML)]) as proc:
        assert arrakis.Client(proc.url).count("X1:TST") == 4
        assert proc.process is not None
        proc.process.send_signal(signal.SIGTERM)
        assert proc.process.wait(10) == 0
        assert "stopped" in proc.log_text()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('["NOCOLON"]\nsample_rate = 1\ndata_type = "float32"\n')
    for args, message in [([str(bad)], "no ':'"), (["--faults", "boom=1"], "unknown fault")]:
        proc = MockProcess(args, start_timeout=20)
        with pytest.raises(RuntimeError, match="exited \\(2\\)") as info, proc:
            pass
        assert message in str(info.value)
