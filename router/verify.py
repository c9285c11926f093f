"""``router verify``: does the scope map still match what its endpoints really do?

    router verify --scope-map MAP [--format text|json] [--timeout S] [--tls-ca FILE]
                  [--token-file FILE] [--margin S]

Every endpoint is contacted concurrently; every call gets what remains of one deadline
(``--timeout``), so the whole run is bounded however many endpoints hang. Per endpoint:
``server-info`` answered; per claim a Find of exactly that scope returns channels; retention
edges probed with Describes (answered inside, refused outside, ``router.verifyplan``); the
endpoint's own ``scope-map``, where it has one, agrees. Each verdict names the map line it is
about. Exit 0 when every claim holds, 1 on drift (or an endpoint not answering in time),
2 on usage errors (bad options, a map that does not load).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from router.timefmt import gps_text, utc_text
from router.verifyplan import (
    REUSE_MARKER,
    Finding,
    Status,
    compare_scope_map,
    inside_time,
    judge_find,
    judge_time,
    own_retention,
    retention_label,
    retention_probes,
    scope_pattern,
    shorten,
)
from scopemap import Endpoint, ScopeMap, load_path

EXIT_TRUE, EXIT_DRIFT, EXIT_USAGE = 0, 1, 2
DEFAULT_TIMEOUT = 10.0
DEFAULT_MARGIN = 5.0


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope-map", required=True, metavar="FILE", help="scope-map YAML")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help=f"the whole run's deadline in seconds (default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--margin",
        type=float,
        default=DEFAULT_MARGIN,
        metavar="S",
        help="retention probes this many seconds inside / outside each window edge "
        f"(default {DEFAULT_MARGIN:g}; allow for clock skew)",
    )
    parser.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="PEM root certificates for grpc+tls:// endpoints (default: the system roots)",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="send 'authorization: Bearer <token>' with the token read from FILE",
    )


@dataclass(frozen=True)
class EndpointReport:
    endpoint: str
    line: int
    findings: tuple[Finding, ...]

    @property
    def drifted(self) -> bool:
        return any(f.status is Status.DRIFT for f in self.findings)


@dataclass(frozen=True)
class Options:
    timeout: float = DEFAULT_TIMEOUT
    margin: float = DEFAULT_MARGIN
    tls_roots: bytes | None = None
    authorization: str | None = None


class Deadline:
    """One absolute deadline on the monotonic clock; calls get what remains of it."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


class Prober:
    """The Flight calls of one endpoint (pyarrow imported here only)."""

    def __init__(self, url: str, options: Options, deadline: Deadline, request_id: str) -> None:
        import pyarrow.flight as flight

        self.flight = flight
        self.url = url
        self.deadline = deadline
        self._kwargs: dict[str, Any] = {}
        if options.tls_roots is not None:
            self._kwargs["tls_root_certs"] = options.tls_roots
        self._headers = [(b"x-request-id", request_id.encode())]
        if options.authorization is not None:
            self._headers.append((b"authorization", options.authorization.encode()))
        self.client = flight.FlightClient(url, **self._kwargs)

    def close(self) -> None:
        self.client.close()

    def _options(self) -> Any:
        remaining = self.deadline.remaining()
        if remaining <= 0:
            raise TimeoutError("--timeout reached before this call")
        return self.flight.FlightCallOptions(timeout=remaining, headers=self._headers)

    def action(self, kind: str) -> Any:
        results = list(self.client.do_action(self.flight.Action(kind, b""), self._options()))
        return json.loads(results[0].body.to_pybytes()) if results else None

    def fetch(self, command: bytes) -> list[Any]:
        """GetFlightInfo, then every endpoint's DoGet (the reuse marker: this server)."""
        info = self.client.get_flight_info(
            self.flight.FlightDescriptor.for_command(command), self._options()
        )
        batches: list[Any] = []
        for ep in info.endpoints:
            locations = [
                str(loc.uri.decode() if isinstance(loc.uri, bytes) else loc.uri)
                for loc in ep.locations
            ]
            if not locations or locations[0] in (REUSE_MARKER, self.url):
                batches.extend(
                    self.client.do_get(ep.ticket, self._options()).read_all().to_batches()
                )
                continue
            other = self.flight.FlightClient(locations[0], **self._kwargs)
            try:
                batches.extend(other.do_get(ep.ticket, self._options()).read_all().to_batches())
            finally:
                other.close()
        return batches


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip()
    return shorten(text.split(". Detail:")[0]) if text else type(exc).__name__


def _timed_out(exc: BaseException, flight: Any) -> bool:
    return isinstance(exc, TimeoutError | flight.FlightTimedOutError | flight.FlightCancelledError)


class _Stop(Exception):
    """The endpoint stopped answering in time: the remaining checks are not run."""


class EndpointCheck:
    """The checks of one endpoint, in order: server-info, scopes, retention, scope-map."""

    def __init__(self, ep: Endpoint, now_ns: int, options: Options, deadline: Deadline) -> None:
        self.ep = ep
        self.now_ns = now_ns
        self.options = options
        self.line = ep.source.line if ep.source else 0
        self.rline = ep.retention.source.line if ep.retention.source else self.line
        self.rlabel = retention_label(ep.retention)
        self.findings: list[Finding] = []
        self.prober = Prober(ep.url, options, deadline, f"verify-{uuid.uuid4().hex[:8]}")

    def run(self) -> EndpointReport:
        try:
            if self.server_info():
                own = self.scope_map()
                sample = self.scopes(own)
                self.retention(sample)
                if own is not None:
                    self.findings.extend(compare_scope_map(self.ep, own, self.line))
        except _Stop:
            pass
        finally:
            self.prober.close()
        return EndpointReport(self.ep.url, self.line, tuple(self.findings))

    def _add(self, check: str, status: Status, line: int, claim: str, detail: str) -> None:
        self.findings.append(Finding(check, status, line, claim, detail))

    def _timed_out(self, exc: BaseException) -> bool:
        return _timed_out(exc, self.prober.flight)

    def server_info(self) -> bool:
        try:
            info = self.prober.action("server-info")
        except Exception as exc:
            why = "did not answer in time" if self._timed_out(exc) else "unreachable"
            self._add(
                "server-info", Status.DRIFT, self.line, "endpoint", f"{why}: {_error_text(exc)}"
            )
            return False
        info = info if isinstance(info, dict) else {}
        detail = (
            f"answered (backend {info.get('backend')}, server_version {info.get('server_version')})"
        )
        self._add("server-info", Status.OK, self.line, "endpoint", detail)
        return True

    def scopes(self, own_map: Any) -> str | None:
        """One Find per claim, at a time the endpoint itself says it holds (so a retention
        drift is reported once, by the retention checks); returns a claimed channel the
        endpoint has, to probe retention with."""
        from router.protocol.arrow import metas_from_batches
        from router.protocol.envelope import Envelope, FindArgs

        own = own_retention(own_map, self.ep.url) if own_map is not None else None
        held = own if own is not None else self.ep.retention
        t_inside = inside_time(held, self.now_ns, self.options.margin)
        sample: str | None = None
        for entry in self.ep.scopes:
            pos = entry.source.line if entry.source else self.line
            if entry.replay is not None:
                label = f"{entry.kind} {entry.value}"
                self._add(
                    "scope", Status.SKIPPED, pos, label, f"replay {entry.replay!r}: not probed"
                )
                continue
            pattern = scope_pattern(entry)
            command = Envelope("Find", FindArgs(pattern=pattern, time=t_inside)).encode()
            try:
                names = [m.name for m in metas_from_batches(self.prober.fetch(command))]
            except Exception as exc:
                self.findings.append(judge_find(entry, pattern, None, _error_text(exc), pos))
                if self._timed_out(exc):
                    raise _Stop from exc
                continue
            self.findings.append(judge_find(entry, pattern, names, None, pos))
            if sample is None and names:
                exact = entry.kind == "channel" and entry.value in names
                sample = entry.value if exact else sorted(names)[0]
        return sample

    def retention(self, sample: str | None) -> None:
        from router.protocol.envelope import DescribeArgs, Envelope

        if sample is None:
            detail = "no claimed channel was found to describe"
            self._add("retention", Status.SKIPPED, self.rline, self.rlabel, detail)
            return
        for probe in retention_probes(self.ep.retention, self.now_ns, self.options.margin):
            command = Envelope("Describe", DescribeArgs((sample,), probe.time)).encode()
            try:
                self.prober.fetch(command)
                error = None
            except Exception as exc:
                if self._timed_out(exc):
                    detail = f"describe {sample} at {probe.label}: no answer in time"
                    self._add("retention", Status.DRIFT, self.rline, self.rlabel, detail)
                    raise _Stop from exc
                error = _error_text(exc)
            self.findings.append(judge_time(probe, sample, error, self.rline, self.rlabel))

    def scope_map(self) -> Any:
        """The endpoint's own ``scope-map`` answer (None: it has no such action)."""
        try:
            return self.prober.action("scope-map")
        except Exception as exc:
            if self._timed_out(exc):
                self._add("scope-map", Status.DRIFT, self.line, "scope-map", "no answer in time")
                raise _Stop from exc
            detail = f"no scope-map action: {_error_text(exc)}"
            self._add("scope-map", Status.SKIPPED, self.line, "scope-map", detail)
            return None


def verify_endpoint(
    ep: Endpoint, now_ns: int, options: Options, deadline: Deadline
) -> EndpointReport:
    return EndpointCheck(ep, now_ns, options, deadline).run()


def verify_map(scope_map: ScopeMap, now_ns: int, options: Options) -> list[EndpointReport]:
    """Every endpoint concurrently, all within ``options.timeout`` (plus a grace second)."""
    deadline = Deadline(options.timeout)
    endpoints = scope_map.endpoints
    pool = ThreadPoolExecutor(max(1, min(32, len(endpoints))), thread_name_prefix="verify")
    try:
        futures = [pool.submit(verify_endpoint, ep, now_ns, options, deadline) for ep in endpoints]
        wait(futures, timeout=options.timeout + 1.0)
        reports = []
        for ep, fut in zip(endpoints, futures, strict=True):
            line = ep.source.line if ep.source else 0
            if fut.done() and fut.exception() is None:
                reports.append(fut.result())
            elif fut.done():
                exc = fut.exception()
                reports.append(
                    EndpointReport(
                        ep.url,
                        line,
                        (
                            Finding(
                                "server-info",
                                Status.DRIFT,
                                line,
                                "endpoint",
                                f"check failed: {exc!r}",
                            ),
                        ),
                    )
                )
            else:
                reports.append(
                    EndpointReport(
                        ep.url,
                        line,
                        (
                            Finding(
                                "server-info",
                                Status.DRIFT,
                                line,
                                "endpoint",
                                "did not answer within --timeout",
                            ),
                        ),
                    )
                )
        return reports
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- CLI


def run(args: argparse.Namespace) -> int:
    from router.protocol.gps import gps_now_ns
    from router.tls import TlsError, read_pem

    if args.timeout <= 0 or args.margin <= 0:
        print("router verify: --timeout and --margin must be > 0", file=sys.stderr)
        return EXIT_USAGE
    try:
        roots = read_pem("--tls-ca", args.tls_ca) if args.tls_ca else None
        token = _read_token(args.token_file) if args.token_file else None
    except (TlsError, OSError, ValueError) as exc:
        print(f"router verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    result = load_path(args.scope_map)
    if not result.ok or result.scope_map is None:
        for d in result.diagnostics:
            print(d.format(), file=sys.stderr)
        print(f"router verify: {args.scope_map} is not a valid scope map", file=sys.stderr)
        return EXIT_USAGE
    options = Options(
        args.timeout, args.margin, roots, None if token is None else f"Bearer {token}"
    )
    now = gps_now_ns()
    started = time.monotonic()
    reports = verify_map(result.scope_map, now, options)
    elapsed = time.monotonic() - started
    code = EXIT_DRIFT if any(r.drifted for r in reports) else EXIT_TRUE
    file = result.scope_map.file
    if args.format == "json":
        json.dump(to_json(reports, file, now, options, elapsed, code), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(reports, file, now, sys.stdout)
    return code


def _read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        token = f.read().strip()
    if not token or any(c.isspace() for c in token):
        raise ValueError(f"--token-file {path}: expected one token")
    return token


def to_json(
    reports: Sequence[EndpointReport],
    file: str,
    now: int,
    options: Options,
    elapsed: float,
    code: int,
) -> dict[str, Any]:
    return {
        "map": file,
        "now": {"gps_ns": now, "gps": gps_text(now), "utc": utc_text(now)},
        "timeout_s": options.timeout,
        "elapsed_s": round(elapsed, 3),
        "endpoints": [
            {
                "endpoint": r.endpoint,
                "file": file,
                "line": r.line,
                "drift": r.drifted,
                "checks": [
                    {
                        "check": f.check,
                        "status": f.status.value,
                        "file": file,
                        "line": f.line,
                        "claim": f.claim,
                        "detail": f.detail,
                    }
                    for f in r.findings
                ],
            }
            for r in reports
        ],
        "drift": sum(1 for r in reports for f in r.findings if f.status is Status.DRIFT),
        "exit_code": code,
    }


_MARK = {Status.OK: "ok   ", Status.DRIFT: "DRIFT", Status.SKIPPED: "skip "}


def render_text(reports: Sequence[EndpointReport], file: str, now: int, out: TextIO) -> None:
    out.write(f"verify {file}: {len(reports)} endpoints, now {gps_text(now)} ({utc_text(now)})\n")
    for r in reports:
        out.write(f"\n{r.endpoint} ({file}:{r.line})\n")
        for f in r.findings:
            about = f.check if f.claim in (f.check, "endpoint") else f"{f.check} [{f.claim}]"
            out.write(f"  {_MARK[f.status]} {file}:{f.line} {about}: {f.detail}\n")
    drifts = sum(1 for r in reports for f in r.findings if f.status is Status.DRIFT)
    bad = sum(1 for r in reports if r.drifted)
    out.write("\n")
    if drifts:
        out.write(f"result: DRIFT: {drifts} finding(s) on {bad} of {len(reports)} endpoints\n")
    else:
        out.write(f"result: the map matches all {len(reports)} endpoints\n")
