"""Real servers for integration tests: upstream arrakis-server mock subprocesses, the router
in-process on port 0, and tiny Flight downstreams named for their behaviour."""

from __future__ import annotations

import re
import subprocess
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
from scopemap import load_text

HERE = Path(__file__).parent
CHANNELS = HERE / "channels.toml"
ARRAKIS_SERVER = Path(sys.executable).parent / "arrakis-server"
_URL = re.compile(r"URL: (grpc://\S+)")


class UpstreamMock:
    """``arrakis-server -u 0 mock CHANNELS`` in a subprocess; ``url`` once it is serving."""

    def __init__(self, *toml: Path) -> None:
        self.proc = subprocess.Popen(
            [str(ARRAKIS_SERVER), "-u", "0", "mock", *map(str, toml)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.url: str | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = _URL.search(line)
            if m and self.url is None:
                self.url = m.group(1)
                self._ready.set()
        self._ready.set()

    def wait(self, timeout: float = 90) -> str:
        self._ready.wait(timeout)
        if self.url is None:
            self.stop()
            raise RuntimeError("arrakis-server mock did not start:\n" + "".join(self.lines[-20:]))
        return self.url

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drainer.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


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
        service.stopping.set()
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
