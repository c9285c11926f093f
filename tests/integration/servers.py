"""Real servers for integration tests: upstream arrakis-server mock subprocesses, the router
in-process on port 0, and tiny Flight downstreams named for their behaviour."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow.flight as flight

from router.downstream import DownstreamPool
from router.metrics import OUTCOMES
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


class FrontAndWorkers:
    """A front router and its data workers, all in this process (see ``running_router``):
    what the tests read of one router, summed over all of them."""

    def __init__(self, front: RouterFlightServer, workers: list[RouterFlightServer]) -> None:
        self.front = front
        self.workers = workers

    @property
    def port(self) -> int:
        return int(self.front.port)

    @property
    def open_streams(self) -> int:
        return self.front.open_streams + sum(w.open_streams for w in self.workers)

    def streams_served(self) -> tuple[int, int]:
        """Stream DoGets answered (any outcome) by the front, and by the workers together."""

        def served(server: RouterFlightServer) -> int:
            registry = server.service.metrics.registry
            return int(
                sum(
                    registry.get_sample_value(
                        "arrakis_router_requests_total",
                        {"rpc": "DoGet", "kind": "Stream", "outcome": outcome},
                    )
                    or 0
                    for outcome in OUTCOMES
                )
            )

        return served(self.front), sum(served(w) for w in self.workers)

    @property
    def worker_urls(self) -> list[str]:
        return [f"grpc://127.0.0.1:{w.port}" for w in self.workers]


@contextmanager
def running_router(
    yaml_text: str,
    *,
    clock: Clock | None = None,
    pool: DownstreamPool | None = None,
    data_workers: int = 0,
    native_output: bool = True,
    **settings: object,
) -> Iterator[tuple[str, RouterService, Any]]:
    """The router on port 0 in this process; yields ``(url, service, server)``.

    ``data_workers``: that many more routers on the same map, settings and clock, whose
    locations the front hands out for Streams in turn (the data-worker path of ``router
    serve --data-workers``, without the processes: tests/integration/test_data_workers.py
    runs those); ``server`` is then a :class:`FrontAndWorkers`. ``native_output=False``:
    streams leave through pyarrow's GeneratorStream instead of router._chunkstream."""
    result = load_text(yaml_text, "test-map.yaml")
    assert result.ok and result.scope_map is not None, [d.format() for d in result.diagnostics]
    services, servers, threads = [], [], []
    for _ in range(1 + data_workers):
        service = RouterService(result.scope_map, Settings(**settings), clock=clock, pool=pool)  # type: ignore[arg-type]
        server = RouterFlightServer(service, "grpc://127.0.0.1:0", native_output=native_output)
        thread = threading.Thread(target=server.serve, daemon=True)
        thread.start()
        services.append(service)
        servers.append(server)
        threads.append(thread)
    front = servers[0]
    if data_workers:
        urls = itertools.cycle([f"grpc://127.0.0.1:{w.port}" for w in servers[1:]])
        services[0].stream_location = lambda: next(urls)
    try:
        shown = FrontAndWorkers(front, servers[1:]) if data_workers else front
        yield f"grpc://127.0.0.1:{front.port}", services[0], shown
    finally:
        for service, server, thread in zip(services, servers, threads, strict=True):
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
