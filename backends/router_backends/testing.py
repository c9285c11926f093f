"""Helpers for tests: mock servers in-process or as subprocesses, always stopped.

with serve_mock(channels="x.toml", retention="0,600", faults="drop=5") as url: ...
with mock_process(["--faults", "exit=10"]) as url: ...
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Self

from router.protocol.announce import serving_line
from router.protocol.channel import ChannelMeta
from router.protocol.gps import Clock
from router_backends.catalog import Catalog, ChannelSpec, load_toml
from router_backends.faults import FaultPlan, parse_faults
from router_backends.interface import Backend
from router_backends.mock import MockBackend
from router_backends.publishers import PublisherConfig, load_publishers
from router_backends.retention import Retention, parse_retention
from router_backends.server import BackendServer

__all__ = [
    "MockProcess",
    "ServerProcess",
    "mock_process",
    "serve_backend",
    "serve_mock",
    "serving_line",
    "upstream_url_line",
]

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


def upstream_url_line(line: str) -> str | None:
    """The URL upstream ``arrakis-server`` logs once bound (``... URL: grpc://HOST:PORT``)."""
    _, sep, rest = line.partition("URL: ")
    return rest.split()[0] if sep and rest.startswith("grpc") else None


class ServerProcess:
    """A server subprocess that announces its bound URL on one line; a context manager.

    ``announce`` turns an output line into the URL (or None); it is read from ``stream``
    (``"stdout"`` or ``"stderr"``). Everything the process writes is kept in a log file
    (``log_text()``); after start-up a daemon thread keeps draining the announcing pipe so a
    chatty server never blocks on a full pipe. ``stop()`` sends SIGTERM, then SIGKILL after a
    timeout; it is idempotent and always runs on exit.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str | None = None,
        announce: Callable[[str], str | None] = serving_line,
        stream: str = "stdout",
        start_timeout: float = 30.0,
        log_path: Path | None = None,
        cwd: Path | None = None,
    ) -> None:
        if stream not in ("stdout", "stderr"):
            raise ValueError(f"stream must be 'stdout' or 'stderr', got {stream!r}")
        self.argv = list(argv)
        self.name = name or Path(self.argv[0]).name
        self.announce = announce
        self.stream = stream
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.url = ""
        self.process: subprocess.Popen[bytes] | None = None
        self._log_path = log_path
        self._log: IO[bytes] | None = None
        self._drainer: threading.Thread | None = None

    def __repr__(self) -> str:
        state = "not started" if self.process is None else f"pid={self.process.pid}"
        return f"<{type(self).__name__} {self.name} {self.url or '-'} {state} rc={self.returncode}>"

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_text(self) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def __enter__(self) -> Self:
        if self._log_path is not None:
            self._log = self._log_path.open("w+b")
        else:
            self._log = tempfile.NamedTemporaryFile(prefix=f"{self.name}-", suffix=".log")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        pipes: dict[str, Any] = {"stdout": self._log, "stderr": self._log}
        pipes[self.stream] = subprocess.PIPE
        self.process = subprocess.Popen(self.argv, env=env, cwd=self.cwd, **pipes)
        try:
            self.url = self._read_url()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _pipe(self) -> IO[bytes]:
        assert self.process is not None
        pipe = self.process.stdout if self.stream == "stdout" else self.process.stderr
        assert pipe is not None
        return pipe

    def _read_url(self) -> str:
        pipe = self._pipe()
        deadline = time.monotonic() + self.start_timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(pipe, selectors.EVENT_READ)
            while True:
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    self._keep(raw + b"\n")
                    url = self.announce(raw.decode(errors="replace"))
                    if url:
                        self._keep(buf)
                        self._drain_in_background(pipe)
                        return url
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    raise TimeoutError(
                        f"{self.name} did not report its URL within {self.start_timeout:.0f} s: "
                        f"{self.log_text()[-2000:]}"
                    )
                chunk = os.read(pipe.fileno(), 65536)
                if not chunk:
                    assert self.process is not None
                    raise RuntimeError(
                        f"{self.name} exited ({self.process.wait()}) before serving: "
                        f"{self.log_text()[-2000:]}"
                    )
                buf += chunk

    def _keep(self, data: bytes) -> None:
        """Append what was read from the announcing pipe to the log."""
        if data and self._log is not None:
            self._log.write(data)

    def _drain_in_background(self, pipe: IO[bytes]) -> None:
        def drain() -> None:
            with contextlib.suppress(OSError, ValueError):
                for chunk in iter(lambda: os.read(pipe.fileno(), 65536), b""):
                    self._keep(chunk)

        self._drainer = threading.Thread(target=drain, name=f"drain-{self.name}", daemon=True)
        self._drainer.start()

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
        if self._drainer is not None:
            self._drainer.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return proc.returncode

    def __exit__(self, *exc: object) -> None:
        """Stop the process and close its log; idempotent."""
        self.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


class MockProcess(ServerProcess):
    """``router-backend COMMAND ARGS`` (default ``mock``) as a subprocess on a free port."""

    def __init__(
        self, args: Sequence[str] = (), *, start_timeout: float = 30.0, command: str = "mock"
    ) -> None:
        self.args = list(args)
        self.command = command
        argv = [sys.executable, "-m", "router_backends", "--log-level", "info", command]
        if not any(a == "--url" or a.startswith("--url=") for a in self.args):
            argv += ["--url", "grpc://127.0.0.1:0"]
        super().__init__(argv + self.args, name="router-backend", start_timeout=start_timeout)


@contextmanager
def mock_process(args: Sequence[str] = (), *, start_timeout: float = 30.0) -> Iterator[str]:
    """``router-backend mock ARGS`` as a subprocess; yields its URL; always stopped."""
    with MockProcess(args, start_timeout=start_timeout) as proc:
        yield proc.url
