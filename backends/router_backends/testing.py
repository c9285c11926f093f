"""Helpers for tests: mock servers in-process or as subprocesses, always stopped.

with serve_mock(channels="x.toml", retention="0,600", faults="drop=5") as url: ...
with mock_process(["--faults", "exit=10"]) as url: ...
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from router.protocol.channel import ChannelMeta
from router.protocol.gps import Clock
from router_backends.base import Backend, BackendServer
from router_backends.catalog import Catalog, ChannelSpec, load_toml
from router_backends.faults import FaultPlan, parse_faults
from router_backends.mock import MockBackend
from router_backends.publishers import PublisherConfig, load_publishers
from router_backends.retention import Retention, parse_retention

__all__ = ["MockProcess", "mock_process", "serve_backend", "serve_mock"]

ChannelsArg = Catalog | str | Path | Iterable[ChannelSpec | ChannelMeta | str | Path] | None


def _catalog(channels: ChannelsArg) -> Catalog | None:
    if channels is None or isinstance(channels, Catalog):
        return channels
    if isinstance(channels, str | Path):
        return Catalog(load_toml(channels))
    specs: list[ChannelSpec] = []
    for item in channels:
        if isinstance(item, ChannelSpec):
            specs.append(item)
        elif isinstance(item, ChannelMeta):
            specs.append(ChannelSpec.simple(item))
        else:
            specs.extend(load_toml(item))
    return Catalog(specs)


def _retention(value: Retention | str | tuple[float, float] | None) -> Retention:
    if value is None:
        return Retention()
    if isinstance(value, Retention):
        return value
    if isinstance(value, str):
        return parse_retention(value)
    return Retention(*value)


def _faults(value: FaultPlan | str | Sequence[str] | None) -> FaultPlan:
    if value is None:
        return FaultPlan()
    if isinstance(value, FaultPlan):
        return value
    return parse_faults([value] if isinstance(value, str) else value)


@contextmanager
def serve_backend(
    backend: Backend, url: str = "grpc://127.0.0.1:0", **server_kwargs: Any
) -> Iterator[BackendServer]:
    """Any backend behind a :class:`BackendServer` in this process (gRPC's own threads)."""
    server = BackendServer(backend, url, **server_kwargs)
    try:
        yield server
    finally:
        server.shutdown()
        server.wait()


@contextmanager
def serve_mock(
    channels: ChannelsArg = None,
    *,
    retention: Retention | str | tuple[float, float] | None = None,
    faults: FaultPlan | str | Sequence[str] | None = None,
    latency: float = 0.0,
    clock: Clock | None = None,
    publishers: dict[str, PublisherConfig] | str | Path | None = None,
    url: str = "grpc://127.0.0.1:0",
) -> Iterator[str]:
    """A mock server in this process; yields its URL.  ``channels``: None (default H1/L1
    sets), a Catalog, a TOML path, or an iterable of specs / metadata / TOML paths."""
    pubs = load_publishers(publishers) if isinstance(publishers, str | Path) else publishers
    backend = MockBackend(_catalog(channels), retention=_retention(retention), publishers=pubs)
    with serve_backend(
        backend, url, clock=clock, latency_s=latency, faults=_faults(faults)
    ) as server:
        yield server.url


class MockProcess:
    """``router-backend mock`` as a subprocess bound to a free port; a context manager.

    ``url`` is known once entered; ``process`` is the Popen; ``log_text()`` its stderr.
    """

    def __init__(
        self, args: Sequence[str] = (), *, start_timeout: float = 30.0, command: str = "mock"
    ) -> None:
        self.args = list(args)
        self.command = command
        self.start_timeout = start_timeout
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def __repr__(self) -> str:
        state = "not started" if self.process is None else f"pid={self.process.pid}"
        return f"<MockProcess {self.url or '-'} {state} rc={self.returncode}>"

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> MockProcess:
        self._log = tempfile.NamedTemporaryFile(prefix="router-backend-", suffix=".log")
        argv = [sys.executable, "-m", "router_backends", "--log-level", "info", self.command]
        if not any(a == "--url" or a.startswith("--url=") for a in self.args):
            argv += ["--url", "grpc://127.0.0.1:0"]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            argv + self.args, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        try:
            self.url = self._read_url()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _read_url(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buf:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise TimeoutError(f"router-backend did not start: {self.log_text()[-2000:]}")
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    raise RuntimeError(
                        f"router-backend exited ({self.process.wait()}): {self.log_text()[-2000:]}"
                    )
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if not line.startswith("serving "):
            raise RuntimeError(f"unexpected first line from router-backend: {line!r}")
        return line.removeprefix("serving ").strip()

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent.  Returns the exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        return proc.returncode

    def __exit__(self, *exc: object) -> None:
        """Stop the process and drop its log; idempotent."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def mock_process(args: Sequence[str] = (), *, start_timeout: float = 30.0) -> Iterator[str]:
    """``router-backend mock ARGS`` as a subprocess; yields its URL; always stopped."""
    with MockProcess(args, start_timeout=start_timeout) as proc:
        yield proc.url
