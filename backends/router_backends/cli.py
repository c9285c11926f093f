"""The ``router-backend`` command line.

    router-backend [--log-level L] [--log-format F] list
    router-backend [--log-level L] [--log-format F] serve NAME [options]
    router-backend [--log-level L] [--log-format F] NAME [options]     # = serve NAME

NAME is an installed plugin of the entry-point group ``arrakis_router.backends`` (ours:
``mock``, ``files``, ``record``); only that plugin is imported.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

from router_backends.plugins import GROUP, PluginError, PluginInfo, discover, load

if TYPE_CHECKING:
    from router_backends.interface import Backend
    from router_backends.server import BackendServer

__all__ = ["add_server_arguments", "build_parser", "main", "normalise_url", "serve_backend_args"]

DEFAULT_PORT = 31206
#: members a backend must have (``router_backends.interface.Backend``)
BACKEND_MEMBERS = (
    "kind",
    "version",
    "retention",
    "find",
    "count",
    "describe",
    "stream_metadata",
    "stream",
    "scopes",
    "replays",
    "publishers",
    "can_publish",
    "publish",
    "partition",
    "close",
)


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
    """The top-level parser: global options, then a command and its own options."""
    parser = argparse.ArgumentParser(
        prog="router-backend",
        description="Arrakis-protocol data servers: serve any installed backend plugin.",
        epilog=f"Backends are plugins of the entry-point group {GROUP!r}; "
        "`router-backend list` shows the installed ones.",
    )
    parser.add_argument("--log-level", default="info", help="debug, info, warning, error")
    parser.add_argument("--log-format", default="console", choices=["console", "json"])
    parser.add_argument(
        "command", metavar="COMMAND", help="list | serve NAME | NAME (an installed plugin)"
    )
    parser.add_argument("options", nargs=argparse.REMAINDER, help="the command's options")
    return parser


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options the server core gives every backend."""
    core = parser.add_argument_group("server options (every backend)")
    core.add_argument(
        "--url",
        default=f"grpc://127.0.0.1:{DEFAULT_PORT}",
        help="bind URL; port 0 picks a free port (the bound URL is printed on stdout)",
    )
    core.add_argument(
        "--retention",
        default=None,
        metavar="NEWEST,OLDEST",
        help="serve only data aged NEWEST..OLDEST seconds (inf allowed); "
        "default: the backend's own window (0,inf)",
    )
    core.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="S",
        help="release each block S seconds after its end has passed",
    )
    core.add_argument(
        "--faults",
        action="append",
        default=[],
        metavar="SPEC",
        help="drop=N, nulls=N, delay=S[/N], stall=S@N, error=N, exit=N (comma separated)",
    )


def list_plugins(out: TextIO) -> int:
    """``router-backend list``: name, package, version, entry point (nothing imported)."""
    rows = [("NAME", "PACKAGE", "VERSION", "ENTRY POINT")]
    rows += [
        (i.name, i.package, i.version, i.value) for infos in discover().values() for i in infos
    ]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        print(
            "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[3], file=out
        )
    return 0


def _describe(plugin: Any) -> str | None:
    text = getattr(plugin, "description", None) or (plugin.__doc__ or "").strip()
    return str(text).split("\n\n", 1)[0].replace("\n", " ") or None


def _missing_members(backend: object) -> list[str]:
    return [m for m in BACKEND_MEMBERS if not hasattr(backend, m)]


def serve_backend_args(
    name: str, info: PluginInfo | None, plugin: Any, args: argparse.Namespace
) -> int:
    """Build the backend from ``args``, serve it until SIGTERM/SIGINT (0) or an ``exit``
    fault (3); 2 when it cannot start, naming the plugin and its package."""
    from router_backends.faults import parse_faults
    from router_backends.retention import parse_retention
    from router_backends.server import BackendServer

    origin = f"plugin {name!r} from {info.origin}" if info is not None else f"plugin {name!r}"
    prefix = f"router-backend {name}: error:"
    try:
        faults = parse_faults(args.faults)
        retention = parse_retention(args.retention) if args.retention else None
        url = normalise_url(args.url)
    except ValueError as exc:
        print(f"{prefix} {exc}", file=sys.stderr)
        return 2
    try:
        backend: Backend = plugin.from_args(args)
    except (ValueError, OSError) as exc:
        print(f"{prefix} {exc} ({origin})", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"{prefix} {origin} failed to start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    missing = _missing_members(backend)
    if missing:
        print(
            f"{prefix} {origin} built {type(backend).__name__}, which is not a backend "
            f"(missing: {', '.join(missing)})",
            file=sys.stderr,
        )
        return 2
    try:
        server = BackendServer(
            backend,
            url,
            latency_s=args.latency,
            faults=faults,
            allow_exit=True,
            retention=retention,
        )
    except Exception as exc:
        backend.close()
        print(f"{prefix} cannot serve at {url}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return serve_until_signalled(
        server,
        backend=name,
        package=info.origin if info is not None else None,
        serves=repr(backend)[:500],
        faults=faults.describe(),
        retention=server.retention.to_json(),
    )


def serve_until_signalled(server: BackendServer, **log_fields: object) -> int:
    """Announce ``serving URL`` on stdout, serve until SIGTERM/SIGINT (0) or until an
    ``exit`` fault asks the process to stop (3), then shut down."""
    import structlog

    from router_backends.server import EXIT_FAULT_STATUS

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"serving {server.url}", flush=True)
    log = structlog.get_logger("router_backends")
    log.info("serving", url=server.url, **log_fields)
    while not stop.wait(0.1) and not server.exit_requested.is_set():
        pass
    status = EXIT_FAULT_STATUS if server.exit_requested.is_set() else 0
    server.shutdown()
    log.info("stopped", url=server.url, status=status, stats=server.stats.to_json())
    return status


def plugin_parser(
    name: str,
    plugin: Any,
    parser: argparse.ArgumentParser | None = None,
) -> argparse.ArgumentParser:
    """The options of plugin ``name``: the server core's (for a backend) and its own."""
    if parser is None:
        parser = argparse.ArgumentParser(
            prog=f"router-backend {name}", description=_describe(plugin)
        )
    if not callable(getattr(plugin, "run", None)):
        add_server_arguments(parser)
    plugin.add_arguments(parser)
    return parser


#: the plugins this distribution registers itself (documented in the CLI reference)
OWN_PLUGINS = ("mock", "files", "record")


def reference_parser(names: Sequence[str] = OWN_PLUGINS) -> argparse.ArgumentParser:
    """The whole command line as one parser with a sub-command per plugin in ``names`` (and
    ``list``), for the generated reference; ``main`` parses in two steps instead, so that
    only the chosen plugin is imported."""
    parser = build_parser()
    top = argparse.ArgumentParser(
        prog=parser.prog, description=parser.description, epilog=parser.epilog
    )
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            top._add_action(action)
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("list", help="the installed plugins", description="the installed plugins")
    for name in names:
        _, plugin = load(name)
        description = _describe(plugin)
        plugin_parser(name, plugin, sub.add_parser(name, help=description, description=description))
    return top


def main(argv: Sequence[str] | None = None) -> int:
    top = build_parser().parse_args(argv)
    from router_backends.logs import configure_logging

    configure_logging(top.log_level, top.log_format)
    if top.command == "list":
        return list_plugins(sys.stdout)
    options = list(top.options)
    name = top.command
    if name == "serve":
        if not options or options[0].startswith("-"):
            print("router-backend serve: error: give the NAME of a backend", file=sys.stderr)
            return 2
        name = options.pop(0)
    try:
        info, plugin = load(name)
    except PluginError as exc:
        print(f"router-backend: error: {exc}", file=sys.stderr)
        return 2
    try:
        parser = plugin_parser(name, plugin)
    except Exception as exc:
        print(
            f"router-backend: error: plugin {name!r} from {info.origin} failed to declare "
            f"its options: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return 2
    plugin_any: Any = plugin
    is_command = callable(getattr(plugin_any, "run", None))
    args = parser.parse_args(options)
    if is_command:
        status: int = plugin_any.run(args)
        return status
    return serve_backend_args(name, info, plugin, args)
