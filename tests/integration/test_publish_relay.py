"""Publish and Partition through the router (relayed to the endpoint whose
``allowed_publishers`` lists the publisher), and redirect-mode answers for ``direct_read``
scope entries (Kafka locations in the FlightInfo; no Kafka needed)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from router.protocol.envelope import Envelope, PublishArgs, StreamArgs
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")
from arrakis.channel import Channel  # noqa: E402
from arrakis.publish import Publisher  # noqa: E402

BACKENDS = Path(__file__).parents[1] / "backends"
CHANNELS_TOML = BACKENDS / "channels.toml"
PUBLISHERS = BACKENDS / "publishers.toml"
GPS0 = 1_400_000_000
NS = 1_000_000_000
REUSE = "arrow-flight-reuse-connection://?"
PARTITION_SCHEMA = pa.schema(
    [
        pa.field("channel", pa.string(), nullable=False),
        pa.field("data_type", pa.string(), nullable=False),
        pa.field("sample_rate", pa.int32(), nullable=False),
        pa.field("partition_id", pa.string()),
        pa.field("partition_index", pa.uint32()),
    ]
)


@pytest.fixture(scope="module")
def downstreams() -> Iterator[tuple[str, str]]:
    """A publishing mock and a plain one (which refuses Publish/Partition)."""
    with (
        testing.serve_mock(CHANNELS_TOML, publishers=PUBLISHERS) as publishing,
        testing.serve_mock(CHANNELS_TOML) as plain,
    ):
        yield publishing, plain


def publish_map(publishing: str, plain: str) -> str:
    # the plain mock comes first in YAML order (it would win any tie): only
    # allowed_publishers can send Publish/Partition to the publishing one
    return (
        f"{plain}:\n  scopes: {{X1: [{{subsystem: CHG}}]}}\n  retention: {{}}\n"
        f"{publishing}:\n  scopes: {{X1: [{{all: true}}]}}\n  retention: {{}}\n"
        "  allowed_publishers: [X1-dyn, X1-static, TEST_X1, ghost]\n"
    )


def _publish_properties(client: flight.FlightClient, publisher: str) -> dict[str, str]:
    command = Envelope("Publish", PublishArgs(publisher)).encode()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
    assert len(info.endpoints) == 1
    endpoint = info.endpoints[0]
    assert [loc.uri.decode() for loc in endpoint.locations] == [REUSE]
    table = client.do_get(endpoint.ticket).read_all()
    assert table.num_rows == 1
    return dict(table.column("properties")[0].as_py())


def test_publish_is_relayed_to_the_allowed_endpoint(downstreams: tuple[str, str]) -> None:
    publishing, plain = downstreams
    with running_router(publish_map(publishing, plain)) as (url, _, _):
        client = flight.connect(url)
        try:
            assert _publish_properties(client, "X1-dyn") == {
                "compression.type": "lz4",
                "bootstrap.servers": "127.0.0.1:9",
            }
            # listed in the map but unknown to the downstream: its refusal is relayed
            with pytest.raises(flight.FlightUnauthorizedError, match="'ghost' is not known"):
                _publish_properties(client, "ghost")
            # listed nowhere: the router refuses at GetFlightInfo, naming the publisher
            with pytest.raises(flight.FlightError, match="'nobody'"):
                _publish_properties(client, "nobody")
            [result] = client.do_action(flight.Action("server-info", b""))
            info = json.loads(result.body.to_pybytes())
            assert {"publish", "partition"} <= set(info["capabilities"])
        finally:
            client.close()


def test_publish_redirect_mode_points_at_the_allowed_endpoint(
    downstreams: tuple[str, str],
) -> None:
    publishing, plain = downstreams
    with running_router(publish_map(publishing, plain), mode="redirect") as (url, _, _):
        client = flight.connect(url)
        try:
            command = Envelope("Publish", PublishArgs("X1-dyn")).encode()
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
            [endpoint] = info.endpoints
            assert [loc.uri.decode() for loc in endpoint.locations] == [publishing]
            assert endpoint.ticket.ticket == command
        finally:
            client.close()


def test_partition_exchange_through_the_router_with_the_real_publisher(
    downstreams: tuple[str, str],
) -> None:
    publishing, plain = downstreams
    with running_router(publish_map(publishing, plain)) as (url, _, _):
        channels = [
            Channel(f"X1:RLY-C{i}", data_type=np.dtype("float32"), sample_rate=256)
            for i in range(3)
        ]
        # register(): Find (publisher filter) -> DoExchange(Partition) on the router -> Find
        pub = Publisher("X1-dyn", url, token=False)
        pub.register(channels)
        got = {n: (c.partition_id, c.partition_index, c.stride) for n, c in pub.channels.items()}
        assert got == {
            "X1:RLY-C0": ("X1-dyn_RLY_0", 0, 62_500_000),
            "X1:RLY-C1": ("X1-dyn_RLY_0", 1, 62_500_000),
            "X1:RLY-C2": ("X1-dyn_RLY_1", 0, 62_500_000),
        }
        # the registration happened on the publishing downstream only
        assert arrakis.Client(publishing).count("X1:RLY") == 3
        assert arrakis.Client(plain).count("X1:RLY") == 0
        # the downstream's refusal of a non-dynamic registration reaches the client
        with pytest.raises(flight.FlightUnauthorizedError, match="may not register channels"):
            Publisher("X1-static", url, token=False).register(
                [Channel("X1:RLY-Z", data_type=np.dtype("float32"), sample_rate=256)]
            )


def test_partition_for_an_unlisted_publisher_is_refused(downstreams: tuple[str, str]) -> None:
    _, plain = downstreams
    yaml_text = f"{plain}:\n  scopes: {{X1: [{{all: true}}]}}\n  retention: {{}}\n"
    with running_router(yaml_text) as (url, _, _):
        client = flight.connect(url)
        try:
            command = Envelope("Partition", PublishArgs("X1-dyn")).encode()
            request = pa.RecordBatch.from_pylist(
                [{"channel": "X1:RLY-Q", "data_type": "float32", "sample_rate": 256}],
                schema=PARTITION_SCHEMA,
            )
            writer, reader = client.do_exchange(flight.FlightDescriptor.for_command(command))
            with pytest.raises(flight.FlightError, match="'X1-dyn'"):
                writer.begin(PARTITION_SCHEMA)
                writer.write_batch(request)
                writer.done_writing()
                reader.read_all()
            with contextlib.suppress(flight.FlightError):
                writer.close()
        finally:
            client.close()


# --------------------------------------------------------------------------- redirect mode


def test_redirect_mode_hands_out_kafka_locations_for_direct_read(
    downstreams: tuple[str, str],
) -> None:
    _, plain = downstreams
    yaml_text = (
        f"{plain}:\n"
        "  scopes:\n"
        "    X1:\n"
        "      - publisher: TEST_X1\n"
        "        subsystems: [TST]\n"
        "        direct_read: kafka://k1.example.org:9092,k2.example.org:9093\n"
        "      - subsystem: CHG\n"
        "  retention: {}\n"
    )
    start = GPS0 * NS + 30_000_000  # off the 62.5 ms grid
    channels = ("X1:TST-RAMP", "X1:TST-SINE", "X1:CHG-RATE")
    command = Envelope("Stream", StreamArgs(channels, start, start + 2 * NS)).encode()
    with running_router(yaml_text, mode="redirect") as (url, _, _):
        client = flight.connect(url)
        try:
            info = client.get_flight_info(flight.FlightDescriptor.for_command(command))
        finally:
            client.close()
    by_channels = {}
    for endpoint in info.endpoints:
        doc = json.loads(endpoint.ticket.ticket)
        assert doc["request"] == "Stream"
        assert doc["args"]["start"] == GPS0 * NS  # rounded down to the stride grid
        assert doc["args"]["end"] == start + 2 * NS
        by_channels[tuple(sorted(doc["args"]["channels"]))] = [
            loc.uri.decode() for loc in endpoint.locations
        ]
    assert by_channels == {
        ("X1:TST-RAMP", "X1:TST-SINE"): [
            "kafka://k1.example.org:9092",
            "kafka://k2.example.org:9093",
            plain,
        ],
        ("X1:CHG-RATE",): [plain],
    }
