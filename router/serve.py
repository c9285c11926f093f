"""``router serve``: load and validate the scope map, start the Flight service, serve until
SIGTERM/SIGINT (graceful), reload on SIGHUP and when the file changes."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from urllib.parse import urlparse

import structlog

from router import __version__
from router import logging as router_logging
from router.limits import Limits
from router.memory import release_large_blocks
from router.service import MODES, RouterService, Settings
from router.tls import TlsError, read_pem, tls_certificates

DEFAULT_URL = "grpc://0.0.0.0:31206"
log = structlog.get_logger("router.serve")

# One option per request limit (router.limits.Limits), defaults taken from the dataclass.
LIMIT_OPTIONS: tuple[tuple[str, str, str], ...] = (
    ("max_request_bytes", "BYTES", "largest descriptor command / ticket / action body"),
    ("max_depth", "LEVELS", "deepest JSON nesting of a request"),
    ("max_channels", "N", "channels per Stream/Describe (after de-duplication)"),
    ("max_name_length", "CHARS", "longest channel name, publisher id or replay id"),
    ("max_pattern_length", "CHARS", "longest Find/Count pattern"),
    ("max_span_s", "S", "longest start..end of a bounded stream, in seconds"),
    ("future_horizon_s", "S", "how far past GPS now a start/time may be, in seconds"),
    ("max_streams", "N", "streams open at once; more get UNAVAILABLE 'router busy'"),
    ("max_streams_per_client", "N", "streams open at once from one client address"),
)


def _limit_flag(field: str) -> str:
    return "--" + field.removesuffix("_s").replace("_", "-")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope-map", required=True, metavar="FILE", help="scope-map YAML")
    parser.add_argument(
        "--url", default=DEFAULT_URL, help=f"bind URL (default {DEFAULT_URL}; port 0 picks one)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="proxy",
        help="proxy: stream through the router (default); redirect: hand out "
        "downstream locations when no time split is needed",
    )
    parser.add_argument("--log-format", choices=router_logging.FORMATS, default="console")
    parser.add_argument("--log-level", choices=router_logging.LEVELS, default="info")
    parser.add_argument(
        "--describe-ttl",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds a Describe answer is reused (0 disables the cache)",
    )
    parser.add_argument(
        "--downstream-timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="deadline of each downstream metadata call / stream open",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="a downstream stream silent this long fails over / fails",
    )
    parser.add_argument(
        "--live-grace",
        type=float,
        default=0.5,
        metavar="S",
        help="live streams: a channel group still missing S seconds after a block's end "
        "plus its max_latency is null-filled for that block (default 0.5)",
    )
    parser.add_argument(
        "--live-buffer",
        type=int,
        default=64,
        metavar="BLOCKS",
        help="live streams: blocks held per channel group ahead of the slowest one; a "
        "downstream further ahead is slowed down (default 64)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics, HOST being the host of "
        "--url (default 0: no metrics endpoint)",
    )
    parser.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve grpc+tls:// with this PEM certificate (needs --tls-key; --url grpc+tls://)",
    )
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM root certificates for grpc+tls:// downstreams (default: the system roots)",
    )
    defaults = Limits()
    limits = parser.add_argument_group("request limits (refused before any work)")
    for field, metavar, text in LIMIT_OPTIONS:
        default = getattr(defaults, field)
        limits.add_argument(
            _limit_flag(field),
            dest=field,
            type=int,
            default=default,
            metavar=metavar,
            help=f"{text} (default {default})",
        )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="check the scope-map file for changes every S seconds (0: only SIGHUP)",
    )


def _bind_location(url: str, tls: bool = False) -> tuple[str, str]:
    """``(location for pyarrow, host to print)``; a URL without scheme gets ``grpc://``
    (``grpc+tls://`` when ``tls``)."""
    if "://" not in url:
        url = f"{'grpc+tls' if tls else 'grpc'}://{url}"
    parsed = urlparse(url)
    host = parsed.hostname or "0.0.0.0"
    port = parsed.port if parsed.port is not None else 31206
    return f"{parsed.scheme}://{host}:{port}", host


def run(args: argparse.Namespace) -> int:
    import pyarrow.flight as flight

    from router.downstream import DownstreamPool
    from router.reload import Reloader
    from router.server import RouterFlightServer
    from scopemap import load_path

    router_logging.configure(args.log_format, args.log_level)
    release_large_blocks()  # RSS comes back after large (refused) requests
    try:
        tls = tls_certificates(args.tls_cert, args.tls_key, args.url)
        roots = read_pem("--tls-ca", args.tls_ca) if args.tls_ca else None
    except TlsError as exc:
        print(f"router serve: {exc}", file=sys.stderr)
        return 2
    result = load_path(args.scope_map)
    for diag in result.diagnostics:
        print(diag.format(), file=sys.stderr)
    if not result.ok or result.scope_map is None:
        print(
            f"router serve: refusing to start: {args.scope_map} is not a valid scope map",
            file=sys.stderr,
        )
        return 1
    if args.live_grace < 0 or args.live_buffer < 1:
        print("router serve: --live-grace must be >= 0 and --live-buffer >= 1", file=sys.stderr)
        return 2
    if args.downstream_timeout <= 0 or args.idle_timeout <= 0 or args.describe_ttl < 0:
        print(
            "router serve: --downstream-timeout and --idle-timeout must be > 0, "
            "--describe-ttl >= 0",
            file=sys.stderr,
        )
        return 2
    try:
        limits = Limits(**{field: getattr(args, field) for field, _, _ in LIMIT_OPTIONS})
    except ValueError as exc:
        print(f"router serve: {exc}", file=sys.stderr)
        return 2
    settings = Settings(
        limits=limits,
        mode=args.mode,
        describe_ttl=args.describe_ttl,
        downstream_timeout=args.downstream_timeout,
        idle_timeout=args.idle_timeout,
        live_grace=args.live_grace,
        live_buffer=args.live_buffer,
    )
    service = RouterService(result.scope_map, settings, pool=DownstreamPool(roots))
    location, host = _bind_location(args.url, tls is not None)
    certificates = [flight.CertKeyPair(*tls)] if tls is not None else []
    try:
        server = RouterFlightServer(service, location, tls_certificates=certificates)
    except Exception as exc:
        print(f"router serve: cannot bind {location}: {exc}", file=sys.stderr)
        service.close()
        return 1
    metrics_server = None
    if args.metrics_port:
        try:
            metrics_server = service.metrics.serve(args.metrics_port, host)
        except OSError as exc:
            print(
                f"router serve: cannot serve metrics on port {args.metrics_port}: {exc}",
                file=sys.stderr,
            )
            server.shutdown()
            service.close()
            return 1
        log.info("metrics_serving", url=f"http://{host}:{metrics_server.port}/metrics")
    reloader = Reloader(service, args.scope_map)
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=reloader.reload, args=("SIGHUP",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    if args.watch_interval > 0:
        reloader.watch(args.watch_interval)
    serving = threading.Thread(target=server.serve, name="flight-serve", daemon=True)
    serving.start()
    url = f"{'grpc+tls' if tls is not None else 'grpc'}://{host}:{server.port}"
    log.info(
        "router_started",
        version=__version__,
        url=url,
        mode=args.mode,
        endpoints=len(result.scope_map.endpoints),
    )
    print(f"serving {url}", flush=True)
    while not stop.wait(0.5):
        pass
    log.info("router_stopping")
    service.stopping.set()
    reloader.stop()
    server.shutdown()
    if metrics_server is not None:
        metrics_server.close()
    service.close()
    log.info("router_stopped")
    return 0
