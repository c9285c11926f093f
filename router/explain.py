"""``router explain``: where a request goes and why, from the same planner as ``router serve``.

    router explain --scope-map MAP [--now T] [--format text|json] CHANNEL... --start T --end T
    router explain --scope-map MAP --describe CHANNEL... [--time T]
    router explain --scope-map MAP --find PATTERN [--time T]

T is GPS seconds or ISO-8601 UTC. No network: the map is loaded, indexed and planned with
``scopemap`` (``scopemap.explain`` annotates the plan); this module only parses and prints.
Exit 0 when the request is fully served, 1 when something is uncovered, 2 on usage errors
(bad arguments, a map that does not load). Imports only ``scopemap`` (never pyarrow).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from router.timefmt import TimeFormatError, age_text, gps_text, parse_time, utc_text
from scopemap import DescribeRequest, FindRequest, RoutingIndex, StreamRequest, load_path
from scopemap.explain import (
    ClaimRef,
    Contender,
    DescribeExplanation,
    FindExplanation,
    GroupWhy,
    StreamExplanation,
    UncoveredWhy,
    Window,
    explain_describe,
    explain_find,
    explain_stream,
)

EXIT_SERVED, EXIT_UNCOVERED, EXIT_USAGE = 0, 1, 2
Explanation = StreamExplanation | DescribeExplanation | FindExplanation


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope-map", required=True, metavar="FILE", help="scope-map YAML")
    parser.add_argument(
        "--now", metavar="T", help="plan as if now were T (GPS s or ISO-8601 UTC; default: now)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.add_argument("channels", nargs="*", metavar="CHANNEL", help="stream channels")
    parser.add_argument("--start", metavar="T", help="stream start (omit: live)")
    parser.add_argument("--end", metavar="T", help="stream end (omit: open-ended)")
    parser.add_argument(
        "--describe", nargs="+", metavar="CHANNEL", help="explain a Describe of CHANNEL..."
    )
    parser.add_argument("--find", metavar="PATTERN", help="explain a Find / Count of PATTERN")
    parser.add_argument("--time", metavar="T", help="Describe / Find time (omit: the newest data)")


class UsageError(Exception):
    pass


def _time(option: str, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except TimeFormatError as exc:
        raise UsageError(f"{option}: {exc}") from exc


def _request(args: argparse.Namespace) -> StreamRequest | DescribeRequest | FindRequest:
    kinds = [bool(args.channels), args.describe is not None, args.find is not None]
    if sum(kinds) != 1:
        raise UsageError("give exactly one request: CHANNEL... (stream), --describe or --find")
    if args.channels:
        if args.time is not None:
            raise UsageError("--time is for --describe / --find; a stream takes --start/--end")
        start, end = _time("--start", args.start), _time("--end", args.end)
        if start is None and end is not None:
            raise UsageError("a live stream (no --start) cannot have an --end")
        if start is not None and end is not None and end <= start:
            raise UsageError(f"--end ({args.end}) must be after --start ({args.start})")
        return StreamRequest(tuple(args.channels), start, end)
    if args.start is not None or args.end is not None:
        raise UsageError("--start/--end are for streams; use --time")
    if args.describe is not None:
        return DescribeRequest(tuple(args.describe), _time("--time", args.time))
    return FindRequest(_time("--time", args.time))


def run(args: argparse.Namespace) -> int:
    try:
        request = _request(args)
        now = _time("--now", args.now)
    except UsageError as exc:
        print(f"router explain: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if now is None:
        from router.protocol.gps import gps_now_ns

        now = gps_now_ns()
    result = load_path(args.scope_map)
    if not result.ok or result.scope_map is None:
        for d in result.diagnostics:
            print(d.format(), file=sys.stderr)
        print(f"router explain: {args.scope_map} is not a valid scope map", file=sys.stderr)
        return EXIT_USAGE
    index = RoutingIndex(result.scope_map)
    found = explain(index, request, now)
    code = exit_code(found)
    if args.format == "json":
        doc = to_json(found, result.scope_map.file, getattr(args, "find", None))
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        render_text(found, result.scope_map.file, sys.stdout, getattr(args, "find", None))
    return code


def explain(
    index: RoutingIndex, request: StreamRequest | DescribeRequest | FindRequest, now: int
) -> Explanation:
    if isinstance(request, StreamRequest):
        return explain_stream(index, request, now)
    if isinstance(request, DescribeRequest):
        return explain_describe(index, request, now)
    return explain_find(index, request, now)


def exit_code(found: Explanation) -> int:
    if isinstance(found, FindExplanation):
        return EXIT_SERVED if found.plan.targets else EXIT_UNCOVERED
    return EXIT_SERVED if found.plan.complete else EXIT_UNCOVERED


# --------------------------------------------------------------------------- JSON


def _t(ns: int | None) -> dict[str, Any] | None:
    if ns is None:
        return None
    return {"gps_ns": ns, "gps": gps_text(ns), "utc": utc_text(ns)}


def _age(value: float) -> float | str:
    return "inf" if math.isinf(value) else value


def _claim_json(c: ClaimRef, file: str) -> dict[str, Any]:
    return {
        "kind": c.kind,
        "domain": c.domain,
        "value": c.value,
        "file": file,
        "line": c.line,
        "column": c.column,
    }


def _window_json(w: Window, file: str) -> dict[str, Any]:
    return {
        "newest_s": _age(w.newest_s),
        "oldest_s": _age(w.oldest_s),
        "live": w.hi is None,
        "start": _t(w.lo),
        "end": _t(w.hi),
        "file": file,
        "line": w.line,
    }


def _contender_json(c: Contender, file: str) -> dict[str, Any]:
    return {
        "endpoint": c.endpoint,
        "channels": list(c.channels),
        "claim": _claim_json(c.claim, file),
        "retention": _window_json(c.window, file),
        "lost": None if c.why is None else c.why.value,
        "detail": c.detail,
    }


def _group_json(g: GroupWhy, file: str) -> dict[str, Any]:
    return {
        "channels": list(g.group.channels),
        "endpoints": list(g.group.endpoints),
        "direct_read": list(g.group.direct_read),
        "chosen": [_contender_json(c, file) for c in g.chosen],
        "lost": [_contender_json(c, file) for c in g.lost],
    }


def _uncovered_json(u: UncoveredWhy, file: str) -> dict[str, Any]:
    return {
        "channels": list(u.uncovered.channels),
        "start": _t(u.uncovered.start),
        "end": _t(u.uncovered.end),
        "reason": u.uncovered.reason.value,
        "claimers": [_contender_json(c, file) for c in u.claimers],
    }


def to_json(found: Explanation, file: str, pattern: str | None = None) -> dict[str, Any]:
    """The document ``--format json`` prints (``schemas/explain.schema.json``)."""
    doc: dict[str, Any] = {"map": file, "now": _t(found.now_ns)}
    if isinstance(found, StreamExplanation):
        req = found.plan.request
        doc["request"] = {
            "kind": "stream",
            "channels": list(req.channels),
            "start": _t(req.start),
            "end": _t(req.end),
        }
        doc["slices"] = [
            {
                "start": _t(s.start),
                "end": _t(s.end),
                "groups": [_group_json(g, file) for g in s.groups],
            }
            for s in found.slices
        ]
        doc["uncovered"] = [_uncovered_json(u, file) for u in found.uncovered]
    elif isinstance(found, DescribeExplanation):
        dreq = found.plan.request
        doc["request"] = {
            "kind": "describe",
            "channels": list(dreq.channels),
            "time": _t(dreq.time),
        }
        doc["groups"] = [_group_json(g, file) for g in found.groups]
        doc["uncovered"] = [_uncovered_json(u, file) for u in found.uncovered]
    else:
        doc["request"] = {"kind": "find", "pattern": pattern, "time": _t(found.plan.request.time)}
        doc["targets"] = [
            {"endpoints": list(t.endpoints), "claims": [_claim_json(c, file) for c in t.claims]}
            for t in found.targets
        ]
        doc["not_asked"] = [_contender_json(c, file) for c in found.not_asked]
    code = exit_code(found)
    doc["complete"] = code == EXIT_SERVED
    doc["exit_code"] = code
    return doc


# --------------------------------------------------------------------------- text


def _when(ns: int | None, missing: str) -> str:
    return missing if ns is None else f"{gps_text(ns)} ({utc_text(ns)})"


def _range(start: int | None, end: int | None) -> str:
    return f"[{_when(start, 'now')}, {_when(end, 'open end')})"


def _window_text(w: Window, file: str) -> str:
    ages = f"newest {age_text(w.newest_s)}, oldest {age_text(w.oldest_s)}"
    lo = "forever" if w.lo is None else gps_text(w.lo)
    hi = "live" if w.hi is None else gps_text(w.hi)
    return f"retention {ages} = [{lo}, {hi}) ({file}:{w.line})"


def _claim_text(c: ClaimRef, file: str) -> str:
    return f"{c.label} ({file}:{c.line})"


def _channels(chans: Sequence[str], limit: int = 6) -> str:
    shown = ", ".join(chans[:limit])
    return shown + (f", … ({len(chans)} channels)" if len(chans) > limit else "")


def _group_text(g: GroupWhy, n: int, file: str, out: TextIO) -> None:
    out.write(f"  group {n}: {_channels(g.group.channels)}\n")
    for rank, url in enumerate(g.group.endpoints, 1):
        role = "preferred" if rank == 1 else "replica"
        out.write(f"    {rank}. {url}  ({role})\n")
        mine = [c for c in g.chosen if c.endpoint == url]
        for c in mine:
            which = "" if len(mine) == 1 else f"  for {_channels(c.channels, 3)}"
            out.write(f"         claim {_claim_text(c.claim, file)}{which}\n")
        if mine:
            out.write(f"         {_window_text(mine[0].window, file)}\n")
    for c in g.lost:
        out.write(f"    lost: {c.endpoint}  {_claim_text(c.claim, file)}")
        out.write(f" for {_channels(c.channels, 3)}: {c.detail}\n")
    if g.group.direct_read:
        out.write(f"    direct read: {', '.join(g.group.direct_read)}\n")


def _uncovered_text(items: Sequence[UncoveredWhy], file: str, out: TextIO) -> None:
    if not items:
        return
    out.write("uncovered:\n")
    for u in items:
        r = u.uncovered
        span = _range(r.start, r.end) if r.start != r.end else f"at {_when(r.start, 'now')}"
        out.write(f"  {_channels(r.channels)} {span}: {r.reason.value}\n")
        for c in u.claimers:
            out.write(f"    claimed by {c.endpoint}  {_claim_text(c.claim, file)}: ")
            out.write(f"{c.detail}; {_window_text(c.window, file)}\n")


def render_text(found: Explanation, file: str, out: TextIO, pattern: str | None = None) -> None:
    now = found.now_ns
    out.write(f"scope map {file}, now {_when(now, '')}\n")
    if isinstance(found, StreamExplanation):
        req = found.plan.request
        out.write(f"stream {_channels(req.channels)} {_range(req.start, req.end)}\n")
        total = len(found.slices)
        for k, s in enumerate(found.slices, 1):
            out.write(f"\nslice {k}/{total} {_range(s.start, s.end)}\n")
            if not s.groups:
                out.write("  (no channel of this slice can be served)\n")
            for n, g in enumerate(s.groups, 1):
                _group_text(g, n, file, out)
        out.write("\n")
        _uncovered_text(found.uncovered, file, out)
    elif isinstance(found, DescribeExplanation):
        dreq = found.plan.request
        at = _when(dreq.time, "the newest data")
        out.write(f"describe {_channels(dreq.channels)} at {at}\n")
        for n, g in enumerate(found.groups, 1):
            _group_text(g, n, file, out)
        out.write("\n")
        _uncovered_text(found.uncovered, file, out)
    else:
        at = _when(found.plan.request.time, "the newest data")
        out.write(f"find {pattern!r} at {at}: one call per disjoint scope group\n")
        for n, t in enumerate(found.targets, 1):
            out.write(f"  target {n}: {' | '.join(t.endpoints)}\n")
            for claim in t.claims:
                out.write(f"    scope {_claim_text(claim, file)}\n")
        for c in found.not_asked:
            out.write(f"  not asked: {c.endpoint}: {c.detail}\n")
        out.write("\n")
    code = exit_code(found)
    out.write("result: fully served\n" if code == EXIT_SERVED else "result: NOT fully served\n")
