"""Real servers for integration tests: upstream arrakis-server mock subprocesses, the router
in-process on port 0, and tiny Flight downstreams named for their behaviour."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.flight as flight

from router.downstream import DownstreamPool
from router.protocol.gps import Clock
from router.server import RouterFlightServer
from router.service import RouterService, Settings
from router_backends.testing import ServerProcess, upstream_url_line
from scopemap import load_text

HERE = Path(__file__).parent
CHANNELS = HERE / "channels.toml"
ARRAKIS_SERVER = Path(sys.executable).parent / "arrakis-server"


def upstream_mock(*toml: Path) -> ServerProcess:
    """``arrakis-server -u 0 mock CHANNELS`` as a subprocess (enter it to start; always stopped)."""
    return ServerProcess(
        [str(ARRAKIS_SERVER), "-u", "0", "mock", *map(str, toml)],
        name="arrakis-server",
        announce=upstream_url_line,
        stream="stderr",
        start_timeout=90,
    )


@contextmanager
def running_router(
    yaml_text: str,
    *,
    clock: Clock | None = None,
    pool: DownstreamPool | None = None,
    **settings: object,
) -> Iterator[tuple[str, RouterService, RouterFlightServer]]:
    result = load_text(yaml_text, "test-map.yaml")
    assert result.ok and result.scope_map is not None, [d.format() for d in result.diagnostics]
    service = RouterService(result.scope_map, Settings(**settings), clock=clock, pool=pool)  # type: ignore[arg-type]
    server = RouterFlightServer(service, "grpc://127.0.0.1:0")
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"grpc://127.0.0.1:{server.port}", service, server
    finally:
        service.cancel_all()
        server.shutdown()
        service.close()
        thread.join(10)


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(predicate())  # type: ignore[operator]


@contextmanager
def serving(server: flight.FlightServerBase) -> Iterator[str]:
    thread = threading.Thread(target=server.serve, daemon=True)
    thread.start()
    try:
        yield f"grpc://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)
