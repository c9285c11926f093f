"""The ``router-backend`` command line."""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router_backends.base import BackendServer

__all__ = ["build_parser", "main", "normalise_url"]

DEFAULT_PORT = 31206


def normalise_url(url: str) -> str:
    """Upstream's conventions: no scheme -> ``grpc://``, no port -> 31206, ``:PORT`` ->
    localhost."""
    if url.startswith(":"):
        url = "localhost" + url
    if "://" not in url:
        url = "grpc://" + url
    scheme, rest = url.split("://", 1)
    if rest.rsplit("]", 1)[-1].count(":") == 0:
        rest = f"{rest}:{DEFAULT_PORT}"
    return f"{scheme}://{rest}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="router-backend", description="Arrakis-protocol data servers we control."
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    sub = parser.add_subparsers(dest="command", required=True)
    mock = sub.add_parser(
        "mock",
        help="deterministic synthetic channels",
        description="Serve deterministic synthetic channels (default: H1 and L1 sets).",
    )
    mock.add_argument(
        "--url",
        default=f"grpc://127.0.0.1:{DEFAULT_PORT}",
        help="bind URL; port 0 picks a free port (the bound URL is printed on stdout)",
    )
    mock.add_argument(
        "--retention",
        default=None,
        metavar="NEWEST,OLDEST",
        help="serve only data aged NEWEST..OLDEST seconds (inf allowed); default 0,inf",
    )
    mock.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="release each block S seconds after its end has passed",
    )
    mock.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="SPEC",
        help="drop=N, nulls=N, delay=S[/N], stall=S@N, error=N, exit=N (comma separated)",
    )
    mock.add_argument(
        "--publishers",
        default=None,
        metavar="FILE",
        help="TOML publisher file: enables Publish and Partition",
    )
    mock.add_argument("channels", nargs="*", metavar="CHANNELS.toml", help="channel files")
    for name, (module, configure, run, help_text) in _SUBCOMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:  # pragma: no cover - a subcommand still being written
            continue
        sub_parser = sub.add_parser(name, help=help_text)
        getattr(mod, configure)(sub_parser)
        sub_parser.set_defaults(run=getattr(mod, run))
    return parser


#: further subcommands: name -> (module, configure(parser) function, run(args) function, help)
_SUBCOMMANDS = {
    "files": (
        "router_backends.files",
        "configure_files",
        "run_files",
        "serve a recording (Arrow IPC)",
    ),
    "record": (
        "router_backends.record",
        "configure_record",
        "run_record",
        "record a stream from any Arrakis server into files",
    ),
}


def _run_mock(args: argparse.Namespace) -> int:
    from router_backends.base import BackendServer
    from router_backends.catalog import Catalog, load_toml
    from router_backends.faults import parse_faults
    from router_backends.mock import MockBackend
    from router_backends.publishers import load_publishers
    from router_backends.retention import Retention, parse_retention

    try:
        catalog = (
            Catalog(spec for path in args.channels for spec in load_toml(path))
            if args.channels
            else None
        )
        retention = parse_retention(args.retention) if args.retention else Retention()
        faults = parse_faults(args.faults)
        publishers = load_publishers(args.publishers) if args.publishers else None
        backend = MockBackend(catalog, retention=retention, publishers=publishers)
        url = normalise_url(args.url)
        server = BackendServer(backend, url, latency_s=args.latency, faults=faults, allow_exit=True)
    except (ValueError, OSError) as exc:
        print(f"router-backend: error: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(
        server,
        channels=len(backend.catalog),
        faults=faults.describe(),
        retention=retention.to_json(),
    )


def serve_until_signalled(server: BackendServer, **log_fields: object) -> int:
    """Announce ``serving URL`` on stdout, serve until SIGTERM/SIGINT, shut down; 0."""
    import structlog

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"serving {server.url}", flush=True)
    log = structlog.get_logger("router_backends")
    log.info("serving", url=server.url, **log_fields)
    while not stop.wait(0.5):
        pass
    server.shutdown()
    log.info("stopped", url=server.url)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from router_backends.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    if args.command == "mock":
        return _run_mock(args)
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)
