"""The example third-party plugin (``examples/backend-plugin``): discovered through its entry
point, served by ``router-backend serve npy`` behind the router, read with the real client."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import arrakis
import numpy as np
import pyarrow.flight as flight
import pytest
from npy_backend import NpyBackend

from router.protocol.envelope import Envelope, StreamArgs
from router_backends.conformance import check_backend
from router_backends.testing import ServerProcess, serve_backend
from tests.integration.servers import running_router

from .npy_data import CHANNELS, HOUR0, NS, expected, write_npy_dir

pytestmark = pytest.mark.integration
NAMES = sorted(CHANNELS)
BOUNDARY = HOUR0 + 3600  # GPS s where the second hour file starts


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_npy_dir(tmp_path_factory.mktemp("npy"))


@pytest.fixture(scope="module")
def npy_url(npy_dir: Path) -> Iterator[str]:
    """`router-backend serve npy DIR` as a subprocess on a free port."""
    argv = [sys.executable, "-m", "router_backends", "serve", "npy", str(npy_dir)]
    with ServerProcess([*argv, "--url", "grpc://127.0.0.1:0"], name="npy") as proc:
        yield proc.url


@pytest.fixture(scope="module")
def router_url(npy_url: str) -> Iterator[str]:
    yaml_text = f"{npy_url}:\n  scopes: {{X1: [{{all: true}}]}}\n  retention: {{}}\n"
    with running_router(yaml_text) as (url, _, _):
        yield url


def test_list_shows_the_example_with_its_package_and_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "router_backends", "list"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()[1:]}
    assert rows["npy"] == ["arrakis-router-npy-backend", "0.1.0", "npy_backend:NpyBackend"]
    for ours in ("mock", "files", "record"):
        assert rows[ours][:2] == ["arrakis-router-backends", "0.1.0"]


def test_fetch_across_two_files_through_the_router(router_url: str) -> None:
    start, end = BOUNDARY - 3, BOUNDARY + 2
    block = arrakis.Client(router_url).fetch(NAMES, start, end)
    for name in NAMES:
        got = block.data[name]
        assert not np.ma.is_masked(got), name
        np.testing.assert_array_equal(np.asarray(got), expected(name, start * NS, end * NS))
    # the counter restarts with the second file: the boundary really was crossed
    count = np.asarray(block.data["X1:NPY-COUNT"])
    assert count[3 * 64 - 1] == 3600 * 64 - 1 and count[3 * 64] == 0


def test_describe_and_find_through_the_router(router_url: str) -> None:
    client = arrakis.Client(router_url)
    described = client.describe(NAMES)
    for name in NAMES:
        rate, dtype, stride = CHANNELS[name]
        meta = described[name]
        assert (meta.sample_rate, meta.stride, np.dtype(meta.data_type)) == (
            rate,
            stride,
            np.dtype(dtype),
        )
    assert sorted(c.name for c in client.find("X1:NPY")) == NAMES
    assert [c.name for c in client.find("X1:NPY-C")] == ["X1:NPY-COUNT"]
    assert client.count("X1:NPY", data_type=["int32"]) == 1


def test_a_missing_hour_is_a_gap_not_an_error(tmp_path: Path) -> None:
    root = write_npy_dir(tmp_path / "d", hours=2)
    (root / "X1:NPY-RAMP" / f"{BOUNDARY}.npy").unlink()
    with serve_backend(NpyBackend(root)) as server:
        block = arrakis.Client(server.url).fetch(NAMES, BOUNDARY - 1, BOUNDARY + 1)
    ramp = block.data["X1:NPY-RAMP"]
    assert not np.ma.getmaskarray(ramp)[:16].any() and np.ma.getmaskarray(ramp)[16:].all()
    assert not np.ma.is_masked(block.data["X1:NPY-COUNT"])


def test_live_requests_are_unavailable_with_a_reason(npy_url: str) -> None:
    client = flight.connect(npy_url)
    try:
        env = Envelope("Stream", StreamArgs(tuple(NAMES), None, None))
        with pytest.raises(flight.FlightUnavailableError, match="archived data only"):
            client.get_flight_info(flight.FlightDescriptor.for_command(env.encode()))
    finally:
        client.close()


def test_a_bad_directory_is_refused_naming_plugin_and_package(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "router_backends", "serve", "npy", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("router-backend npy: error: ")
    assert "cannot read channels.json" in proc.stderr
    assert "plugin 'npy' from arrakis-router-npy-backend 0.1.0" in proc.stderr


def test_the_example_passes_the_conformance_kit(npy_dir: Path) -> None:
    report = check_backend(
        NpyBackend(npy_dir), start_ns=(BOUNDARY - 2) * NS, end_ns=(BOUNDARY + 2) * NS, live=False
    )
    report.assert_ok()
    assert [o.check for o in report.outcomes][-1] == "live pacing"
