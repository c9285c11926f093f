"""``router health URL``: exit 0 when the server answers ``server-info``, else 1 with a
clear message (used by the Docker HEALTHCHECK). ``--ready``: exit 0 only when the router
also reports itself ready (its ``server-info`` carries a ``health`` field: a map is loaded
and every domain has an endpoint up), else 1 naming what is not."""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "url",
        nargs="?",
        default=None,
        help="router / Arrakis server URL (default: the local address `router serve` binds "
        "with the same environment and config file, e.g. grpc://127.0.0.1:31206)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="give up after S seconds (default 5)",
    )
    parser.add_argument(
        "--ready",
        action="store_true",
        help="also require readiness: every domain of the router's map has an endpoint up",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM root certificates for a grpc+tls:// URL (default: the system roots)",
    )


def run(args: argparse.Namespace) -> int:
    import pyarrow.flight as flight

    from router.serve import local_url
    from router.tls import TlsError, read_pem

    if args.url is None:
        try:
            args.url = local_url()
        except ValueError as exc:
            print(f"router health: {exc}", file=sys.stderr)
            return 1
    url = args.url if "://" in args.url else f"grpc://{args.url}"
    try:
        roots = read_pem("--tls-ca", args.tls_ca) if args.tls_ca else None
    except TlsError as exc:
        print(f"router health: {exc}", file=sys.stderr)
        return 1
    try:
        client = flight.FlightClient(url, **({"tls_root_certs": roots} if roots else {}))
        try:
            options = flight.FlightCallOptions(timeout=args.timeout)
            results = list(client.do_action(flight.Action("server-info", b""), options))
            info = json.loads(results[0].body.to_pybytes())
        finally:
            client.close()
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"router health: {url} did not answer server-info: {text}", file=sys.stderr)
        return 1
    version = info.get("server_version") if isinstance(info, dict) else None
    if args.ready:
        return _ready(url, info)
    print(f"ok: {url} answers server-info (server_version {version})")
    return 0


def _ready(url: str, info: object) -> int:
    health = info.get("health") if isinstance(info, dict) else None
    if not isinstance(health, dict) or "ready" not in health:
        print(f"router health: {url} does not report readiness (not a router?)", file=sys.stderr)
        return 1
    if health["ready"] is True:
        up, total = health.get("endpoints_up"), health.get("endpoints_total")
        print(f"ready: {url} ({up} of {total} endpoints up)")
        return 0
    domains = health.get("domains_without_healthy_endpoint") or []
    down = [
        f"{e.get('endpoint')} ({e.get('state')}: {e.get('last_failure')})"
        for e in health.get("endpoints_not_up") or []
        if isinstance(e, dict)
    ]
    print(
        f"router health: {url} is not ready: no endpoint up for domain(s) "
        f"{', '.join(map(str, domains)) or '-'}; not up: {'; '.join(down)[:2000] or '-'}",
        file=sys.stderr,
    )
    return 1
