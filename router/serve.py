"""``router serve``: load and validate the scope map, start the Flight service, serve until
SIGTERM/SIGINT, then drain (:mod:`router.drain`: bounded by ``--drain-timeout``); reload on
SIGHUP and when the file changes. Every option may also come from the environment
(``ARRAKIS_ROUTER_<OPTION>``) or a TOML ``--config`` file (:mod:`router.config`)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import structlog

from router import __version__, outstream, scheduling
from router import logging as router_logging
from router.config import ENV_PREFIX, ConfigError, env_name, layered, render, resolve
from router.downstream import WINDOW_BYTES, WINDOW_MAX, WINDOW_MIN
from router.limits import Limits
from router.memory import allocator, cap_arenas, release_large_blocks
from router.service import MODES, RouterService, Settings, default_chunk_slots
from router.tls import TlsError, read_pem, tls_certificates

if TYPE_CHECKING:
    from scopemap import LoadResult

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


def warn_if_not_native(requested: str) -> bool:
    """Log ``native_output_unavailable`` (and return True) when the native output stage
    was asked for but this process cannot use it."""
    if requested != "native" or outstream.NATIVE:
        return False
    log.warning(
        "native_output_unavailable",
        reason=outstream.WHY_NOT_NATIVE,
        effect="streams use pyarrow's GeneratorStream: more CPU per block under many readers",
    )
    return True


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
        "--request-timeout",
        type=float,
        default=None,
        metavar="S",
        help="overall deadline of every request, streams included (default: none for "
        f"streams, {Settings.metadata_request_timeout:g} s for metadata calls); each "
        "downstream call gets what remains",
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
        "--health-interval",
        type=float,
        default=Settings.health_interval,
        metavar="S",
        help="check every endpoint with a server-info call every S seconds (0: no active "
        f"checks; default {Settings.health_interval:g})",
    )
    parser.add_argument(
        "--health-timeout",
        type=float,
        default=Settings.health_timeout,
        metavar="S",
        help="deadline of one active check, at most half the interval "
        f"(default {Settings.health_timeout:g})",
    )
    parser.add_argument(
        "--max-downstream-calls",
        type=int,
        default=Settings.max_downstream_calls,
        metavar="N",
        help="calls in flight per endpoint (open streams included); over it a call goes "
        f"to the next replica at once (0: no cap; default {Settings.max_downstream_calls})",
    )
    parser.add_argument(
        "--eject-after",
        type=int,
        default=Settings.eject_after,
        metavar="N",
        help="consecutive failed calls that eject an endpoint (ordered last) "
        f"(default {Settings.eject_after})",
    )
    parser.add_argument(
        "--ejection-time",
        type=float,
        default=Settings.ejection_time,
        metavar="S",
        help="first ejection period; it grows with repeat ejections up to 300 s "
        f"(default {Settings.ejection_time:g})",
    )
    parser.add_argument(
        "--downstream-window",
        type=int,
        default=WINDOW_BYTES,
        metavar="BYTES",
        help="receive window of each downstream stream: what a downstream may send ahead of "
        "what the router has forwarded. Larger moves more per stream and holds more memory "
        f"per open stream ({WINDOW_MIN} to {WINDOW_MAX}; 0: gRPC's own window, grown without "
        f"bound by bandwidth probing; default {WINDOW_BYTES})",
    )
    parser.add_argument(
        "--chunk-slots",
        type=int,
        default=default_chunk_slots(),
        metavar="N",
        help="historical chunks read, checked and written at the same time by one process: "
        "the other streams wait their turn, so each chunk is still in the CPU's cache when "
        "it is sent; a turn held over 0.1 s (a slow client) stops counting. 0: no limit "
        "(default: the CPUs this process may use)",
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
    parser.add_argument(
        "--data-workers",
        type=int,
        default=0,
        metavar="N",
        help="serve streams from N data worker processes of this router (every core: one "
        "process moves data with one); GetFlightInfo hands each Stream the location of one "
        "worker in turn (default 0: streams are served in this process)",
    )
    parser.add_argument(
        "--advertise-host",
        metavar="HOST",
        help="host name or address clients reach the data workers at (default: the host of "
        "--url, or this machine's host name when --url binds every address)",
    )
    parser.add_argument(
        "--data-worker-port",
        type=int,
        default=0,
        metavar="FIRST",
        help="data worker K listens on port FIRST+K (default 0: any free port)",
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
        "--output",
        choices=("native", "python"),
        default="native",
        help="how DoGet streams are written: native (the compiled router._chunkstream, when "
        "built) or python (pyarrow's GeneratorStream: the same bytes, more CPU per block)",
    )
    parser.add_argument(
        "--scheduling",
        choices=scheduling.POLICIES,
        default="batch",
        help="CPU scheduling policy of the router's threads: batch (Linux SCHED_BATCH: a "
        "woken thread does not preempt a running one; fewer thread switches and less CPU "
        "per GB under many streams) or normal (as started). A policy set from outside "
        "(chrt) is kept (default batch)",
    )
    parser.add_argument(
        "--watch-interval",
        type=float,
        default=5.0,
        metavar="S",
        help="check the scope-map file for changes every S seconds (0: only SIGHUP)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=20.0,
        metavar="S",
        help="on SIGTERM/SIGINT: refuse new calls, end live streams (clients reconnect), let "
        "bounded streams finish for up to S seconds, then stop (default 20)",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help='TOML file of settings (keys: option names, e.g. scope-map = "..."); '
        f"precedence: flag > environment ({ENV_PREFIX}<OPTION>) > file > default",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings and where each came from, then exit",
    )
    parser.epilog = (
        f"Every option may also be set by an environment variable {ENV_PREFIX}<OPTION> or in "
        "the --config TOML file; precedence: flag > environment > file > default "
        "(--print-config shows the result)."
    )
    # last: every option above (and any added before this line) is layered
    layered(parser)
    parser.set_defaults(_parser=parser)


def _bind_location(url: str, tls: bool = False) -> tuple[str, str]:
    """``(location for pyarrow, host to print)``; a URL without scheme gets ``grpc://``
    (``grpc+tls://`` when ``tls``)."""
    if "://" not in url:
        url = f"{'grpc+tls' if tls else 'grpc'}://{url}"
    parsed = urlparse(url)
    host = parsed.hostname or "0.0.0.0"
    port = parsed.port if parsed.port is not None else 31206
    return f"{parsed.scheme}://{host}:{port}", host


def local_url(environ: Mapping[str, str] | None = None) -> str:
    """Where a local client reaches the ``router serve`` configured by ``environ`` (default
    the process environment) and its ``--config`` file: the bound URL, a wildcard host
    (``0.0.0.0``, ``::``) replaced by loopback. Used by ``router health`` without a URL, so a
    container's HEALTHCHECK follows the configured port."""
    parser = argparse.ArgumentParser(prog="router serve")
    configure(parser)
    args = resolve(parser.parse_args([]), parser, environ).args
    location, host = _bind_location(args.url, bool(args.tls_cert))
    if host in ("0.0.0.0", "::", "[::]", ""):
        location = location.replace(f"//{host}:", "//127.0.0.1:", 1)
    return location


def _parser_of(args: argparse.Namespace) -> argparse.ArgumentParser:
    parser = getattr(args, "_parser", None)
    if isinstance(parser, argparse.ArgumentParser):
        return parser
    parser = argparse.ArgumentParser(prog="router serve")  # run() called without the CLI
    configure(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    # the log format before the settings are resolved (their errors are logged in it)
    early_format = args.log_format
    if not isinstance(early_format, str):
        early_format = os.environ.get(env_name("log_format"), "console")
    if early_format not in router_logging.FORMATS:
        early_format = "console"
    router_logging.configure(early_format, "info")
    try:
        resolved = resolve(args, _parser_of(args))
    except ConfigError as exc:
        router_logging.startup_error(str(exc))
        return 2
    args = resolved.args
    if args.print_config:
        print(render(resolved), end="")
        return 2 if resolved.missing else 0
    router_logging.configure(args.log_format, args.log_level)
    if resolved.unknown_env:
        log.warning("unknown_settings_ignored", variables=list(resolved.unknown_env))
    if resolved.missing:
        router_logging.startup_error(
            f"missing required setting(s) {', '.join(resolved.missing)} (flag, "
            f"{ENV_PREFIX}<OPTION> or --config file)"
        )
        return 2
    try:
        return _serve(args)
    except Exception as exc:  # an unforeseen start-up failure: one clear line, then exit
        router_logging.startup_error(f"{type(exc).__name__}: {exc}")
        return 1


def run_worker(args: argparse.Namespace, index: int, metrics_dir: str | None) -> int:
    """One data worker of a front started with ``--data-workers`` (see router.workers):
    ``args`` are the front's resolved settings with the worker's own bind URL."""
    router_logging.configure(args.log_format, args.log_level, fields={"worker": index})
    try:
        return _serve(args, worker=index, metrics_dir=metrics_dir)
    except Exception as exc:
        router_logging.startup_error(f"{type(exc).__name__}: {exc}")
        return 1


def worker_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The front's resolved options as a data worker gets them: no metrics port (the front
    serves the sum), no file watch (the front fans its reloads out), no workers of its own."""
    skip = {"_parser", "config", "print_config", "func", "command"}
    settings = {
        k: v
        for k, v in vars(args).items()
        if k not in skip and (v is None or isinstance(v, str | int | float | bool))
    }
    settings.update(metrics_port=0, watch_interval=0.0, data_workers=0)
    return settings


def _serve(
    args: argparse.Namespace, worker: int | None = None, metrics_dir: str | None = None
) -> int:
    """Serve as the front (``worker`` None), or as data worker ``worker`` whose metric values
    go to ``metrics_dir``."""
    from scopemap import load_path

    fail = router_logging.startup_error
    release_large_blocks()  # RSS comes back after large (refused) requests
    cap_arenas()  # ... and after many concurrent streams (before any server thread starts)
    try:
        tls = tls_certificates(args.tls_cert, args.tls_key, args.url)
        roots = read_pem("--tls-ca", args.tls_ca) if args.tls_ca else None
    except TlsError as exc:
        fail(str(exc))
        return 2
    if args.drain_timeout < 0:
        fail(f"--drain-timeout must be >= 0, got {args.drain_timeout}")
        return 2
    result = load_path(args.scope_map)
    for diag in result.diagnostics:
        if args.log_format == "json":
            log.warning("scope_map_diagnostic", diagnostic=diag.format())
        else:
            print(diag.format(), file=sys.stderr)
    if not result.ok or result.scope_map is None:
        fail(f"refusing to start: {args.scope_map} is not a valid scope map")
        return 1
    if args.live_grace < 0 or args.live_buffer < 1:
        fail("--live-grace must be >= 0 and --live-buffer >= 1")
        return 2
    if args.downstream_timeout <= 0 or args.idle_timeout <= 0 or args.describe_ttl < 0:
        fail("--downstream-timeout and --idle-timeout must be > 0, --describe-ttl >= 0")
        return 2
    if args.request_timeout is not None and args.request_timeout <= 0:
        print("router serve: --request-timeout must be > 0", file=sys.stderr)
        return 2
    if (
        args.health_interval < 0
        or args.health_timeout <= 0
        or args.max_downstream_calls < 0
        or args.eject_after < 1
        or args.ejection_time <= 0
    ):
        print(
            "router serve: --health-interval must be >= 0, --health-timeout and "
            "--ejection-time > 0, --max-downstream-calls >= 0 and --eject-after >= 1",
            file=sys.stderr,
        )
        return 2
    chunk_slots = getattr(args, "chunk_slots", default_chunk_slots())
    if chunk_slots < 0:
        fail(f"--chunk-slots must be >= 0 (0: no limit), got {chunk_slots}")
        return 2
    window = getattr(args, "downstream_window", WINDOW_BYTES)
    if window != 0 and not WINDOW_MIN <= window <= WINDOW_MAX:
        fail(f"--downstream-window must be 0 or {WINDOW_MIN} to {WINDOW_MAX} bytes, got {window}")
        return 2
    data_workers = getattr(args, "data_workers", 0) or 0
    first_port = getattr(args, "data_worker_port", 0) or 0
    if data_workers < 0 or not 0 <= first_port <= 65535 - max(0, data_workers - 1):
        fail(
            f"--data-workers must be >= 0 (got {data_workers}) and --data-worker-port a port "
            f"that leaves room for every worker (got {first_port})"
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
        health_interval=args.health_interval,
        health_timeout=args.health_timeout,
        max_downstream_calls=args.max_downstream_calls,
        eject_after=args.eject_after,
        ejection_time=args.ejection_time,
        describe_ttl=args.describe_ttl,
        downstream_timeout=args.downstream_timeout,
        request_timeout=args.request_timeout,
        idle_timeout=args.idle_timeout,
        live_grace=args.live_grace,
        live_buffer=args.live_buffer,
        chunk_slots=chunk_slots,
    )
    # every setting checked: from here on the process serves (its workers, threads, gRPC's)
    scheduling.apply(getattr(args, "scheduling", "batch"))
    if data_workers:  # the front of data workers: every process's metric values summed
        from router.workers import WorkerStartError, metrics_directory

        try:
            directory = metrics_directory()
        except WorkerStartError as exc:
            fail(str(exc))
            return 1
        try:
            return _serve_with(args, result, settings, roots, tls, worker, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return _serve_with(args, result, settings, roots, tls, worker, metrics_dir)


def _serve_with(
    args: argparse.Namespace,
    result: LoadResult,
    settings: Settings,
    roots: bytes | None,
    tls: tuple[bytes, bytes] | None,
    worker: int | None,
    metrics_dir: str | None,
) -> int:
    import pyarrow.flight as flight

    from router.downstream import DownstreamPool
    from router.drain import drain
    from router.metrics import Page, RouterMetrics
    from router.probes import health_pages
    from router.reload import Reloader
    from router.server import RouterFlightServer
    from router.statuspage import status_page_for
    from router.workers import (
        RELOAD_TIMEOUT,
        DataWorkers,
        WorkersCollector,
        WorkerStartError,
        advertised_host,
        enable_multiprocess,
        forget_process,
        report_reloaded,
    )

    fail = router_logging.startup_error
    assert result.scope_map is not None
    if metrics_dir is not None:
        enable_multiprocess(metrics_dir)
    metrics = RouterMetrics(multiprocess_dir=metrics_dir if worker is None else None)
    pool = DownstreamPool(roots, args.downstream_window)
    service = RouterService(result.scope_map, settings, pool=pool, metrics=metrics)
    location, host = _bind_location(args.url, tls is not None)
    certificates = [flight.CertKeyPair(*tls)] if tls is not None else []
    scheme = "grpc+tls" if tls is not None else "grpc"
    workers: DataWorkers | None = None
    if worker is None and args.data_workers:
        # started (and serving) before the front binds: from its first call on, the front
        # hands Streams to them
        workers = DataWorkers(
            args.data_workers,
            worker_settings(args),
            scheme=scheme,
            bind_host=host,
            advertise_host=advertised_host(host, args.advertise_host),
            first_port=args.data_worker_port,
            metrics_dir=metrics_dir,
            on_exit=lambda pid: forget_process(metrics_dir or "", pid),
        )
        try:
            workers.start()
        except (WorkerStartError, OSError) as exc:
            fail(str(exc))
            service.close()
            return 1
        service.stream_location = workers.location
        metrics.register(WorkersCollector(workers))
    try:
        # serving from here on: pyarrow's serve() is never called (it installs its own
        # SIGINT/SIGTERM handling and waits for open calls without a deadline)
        server = RouterFlightServer(
            service,
            location,
            native_output=args.output == "native",
            tls_certificates=certificates,
        )
    except Exception as exc:
        fail(f"cannot bind {location}: {exc}")
        if workers is not None:
            workers.stop(5.0)
        service.close()
        return 1
    metrics_server = None
    if args.metrics_port:
        try:
            views = workers.views if workers is not None else None
            pages: dict[str, Page] = {"/": status_page_for(service, workers=views)}
            pages.update(health_pages(service.health, service.draining.is_set))
            metrics_server = metrics.serve(args.metrics_port, host, pages)
        except OSError as exc:
            fail(f"cannot serve metrics on port {args.metrics_port}: {exc}")
            if workers is not None:
                workers.stop(0.0)
            server.shutdown()
            service.close()
            return 1
        log.info(
            "metrics_serving",
            url=f"http://{host}:{metrics_server.port}/metrics",
            probes=["/healthz", "/readyz"],
            status_page=f"http://{host}:{metrics_server.port}/",
        )
    checker = service.health_checker()
    if checker is not None:
        checker.start()
        log.info("health_checks_started", interval=checker.interval, timeout=checker.timeout)
    reloader = Reloader(
        service,
        args.scope_map,
        before_swap=(
            (lambda digest: workers.reload(digest, RELOAD_TIMEOUT)) if workers is not None else None
        ),
        on_reloaded=report_reloaded if worker is not None else None,
        report=worker is None,
    )
    if worker is None:
        metrics.reloaded(True, reloader.fingerprint, len(result.scope_map.endpoints))
    stop = threading.Event()
    received: list[str] = []

    def on_stop(signum: int, frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=reloader.reload, args=("SIGHUP",), daemon=True).start()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_hup)
    if args.watch_interval > 0:
        reloader.watch(args.watch_interval)
    url = f"{scheme}://{host}:{server.port}"
    log.info(
        "router_started" if worker is None else "data_worker_started",
        version=__version__,
        url=url,
        mode=args.mode,
        endpoints=len(result.scope_map.endpoints),
        drain_timeout_s=args.drain_timeout,
        output="native" if server.native_output else "python",
        downstream_window=args.downstream_window,
        chunk_slots=getattr(args, "chunk_slots", None),
        scheduling=scheduling.current(),
        allocator=allocator(),
        **({"data_workers": workers.locations()} if workers is not None else {}),
    )
    warn_if_not_native(args.output)
    router_logging.announce(url)
    while not stop.wait(0.5):
        pass
    log.info("router_stopping", signal=received[0] if received else None)
    reloader.stop()
    if checker is not None:
        checker.stop()
    if workers is not None:
        workers.drain()  # the workers drain at the same time as this process
    report = drain(service, server.shutdown, args.drain_timeout)
    if workers is not None:
        # a worker drains with the same deadline (plus its own shutdown): then it is killed
        workers.stop(max(0.0, args.drain_timeout - report.seconds) + 5.0)
    if metrics_server is not None:
        metrics_server.close()
    service.close()
    log.info("router_stopped", cut_short=report.cut_short, seconds=round(report.seconds, 3))
    if not report.shutdown_complete:
        # gRPC still holds a handler that ignored its cancellation: do not wait for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
