"""Request limits, checked at the door before any planning or downstream call.

:class:`Limits` holds every bound (its defaults are the ``router serve`` defaults); the
checks are pure functions of the request bytes or the parsed envelope, the limits and GPS
now, and raise :class:`~router.errors.InvalidRequestError` with a text naming the field,
the rule and the (shortened) value. A refused request costs a size check, at most one JSON
parse and a few comparisons: no plan, no downstream call.

Time arithmetic on client-supplied GPS nanoseconds is checked against int64 (what the
Arrow ``timestamp[ns]`` columns and the downstreams hold): :func:`align_down` and
:func:`align_up` refuse instead of producing a time that wraps.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidRequestError
from router.protocol.envelope import (
    DescribeArgs,
    Envelope,
    FindArgs,
    PublishArgs,
    StreamArgs,
    parse_envelope,
)
from router.protocol.errors import name_list, shorten

__all__ = [
    "INT64_MAX",
    "Limits",
    "accept",
    "align_down",
    "align_up",
    "check_pattern",
    "check_request",
    "check_size",
]

INT64_MAX = 2**63 - 1
NS = 1_000_000_000
DAY = 86_400

_parser: Any = importlib.import_module("re._parser")  # the stdlib's regex parser
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})


@dataclass(frozen=True)
class Limits:
    """Every bound on one request. ``router serve`` builds its options from these defaults."""

    #: bytes of a descriptor command, ticket or action body
    max_request_bytes: int = 1 << 20
    #: JSON nesting of an envelope (a valid one needs 3)
    max_depth: int = 32
    #: channel names in one Stream/Describe (after de-duplication), and entries in any list
    max_channels: int = 10_000
    #: characters of one channel name, publisher id or replay id
    max_name_length: int = 256
    #: characters of a Find/Count pattern
    max_pattern_length: int = 1024
    #: seconds between start and end of a bounded stream
    max_span_s: int = 400 * DAY
    #: seconds past GPS now a start (or a Describe/Find time) may lie
    future_horizon_s: int = DAY
    #: streams (DoGet of any kind) open at once; over it: UNAVAILABLE "router busy"
    max_streams: int = 256
    #: streams open at once from one client address
    max_streams_per_client: int = 32

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"limit {name} must be a positive integer, got {value!r}")


def _bad(what: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"invalid {what}: {problem}")


def check_size(data: bytes, what: str, limits: Limits) -> None:
    """Refuse a descriptor command / ticket / action body over ``max_request_bytes``."""
    if len(data) > limits.max_request_bytes:
        raise _bad(
            "request",
            f"{what} is {len(data)} bytes, limit {limits.max_request_bytes} (max_request_bytes)",
        )


def accept(data: bytes, what: str, limits: Limits, now_ns: int) -> Envelope:
    """The envelope in ``data`` if it passes every check: size, then parsing (with the
    nesting limit), then :func:`check_request`."""
    check_size(data, what, limits)
    envelope = parse_envelope(
        data,
        max_depth=limits.max_depth,
        max_pattern=limits.max_pattern_length,
        max_items=limits.max_channels,
    )
    check_request(envelope, limits, now_ns)
    return envelope


# --------------------------------------------------------------------------- envelopes


def check_request(envelope: Envelope, limits: Limits, now_ns: int) -> None:
    """Refuse a parsed request over a limit (see :class:`Limits`)."""
    kind, args = envelope.request, envelope.args
    what = f"{kind} request"
    replay_id: str | None = args.replay_id
    if replay_id is not None:
        _check_name(what, "replay_id", replay_id, limits)
    if isinstance(args, StreamArgs | DescribeArgs):
        _check_channels(what, args.channels, limits)
    if isinstance(args, StreamArgs):
        _check_stream_times(what, args, limits, now_ns)
    elif isinstance(args, DescribeArgs):
        _check_time(what, "time", args.time, limits, now_ns)
    elif isinstance(args, FindArgs):
        _check_time(what, "time", args.time, limits, now_ns)
        for field in ("data_type", "publisher"):
            values: tuple[str, ...] = getattr(args, field)
            if len(values) > limits.max_channels:
                raise _bad(
                    what,
                    f"args.{field}: {len(values)} entries, limit {limits.max_channels}",
                )
        check_pattern(what, args.pattern, limits)
    elif isinstance(args, PublishArgs):
        _check_name(what, "publisher_id", args.publisher_id, limits)


def _check_name(what: str, field: str, value: str, limits: Limits) -> None:
    if len(value) > limits.max_name_length:
        raise _bad(
            what,
            f"args.{field}: {len(value)} characters, limit {limits.max_name_length}: "
            f"{shorten(repr(value), 60)}",
        )


def _check_channels(what: str, channels: tuple[str, ...], limits: Limits) -> None:
    if len(channels) > limits.max_channels:
        raise _bad(
            what,
            f"args.channels: {len(channels)} channels, limit {limits.max_channels} "
            f"(max_channels): {name_list(channels, 5)}",
        )
    long = [c for c in channels if len(c) > limits.max_name_length]
    if long:
        raise _bad(
            what,
            f"args.channels: channel name(s) longer than {limits.max_name_length} "
            f"characters: {name_list([repr(c) for c in long], 5)}",
        )


def _check_int64(what: str, field: str, value: int) -> None:
    if not 0 <= value <= INT64_MAX:
        raise _bad(
            what,
            f"args.{field}: {shorten(str(value), 40)} is not a GPS time in ns (0 to {INT64_MAX})",
        )


def _check_time(what: str, field: str, value: int | None, limits: Limits, now_ns: int) -> None:
    if value is None:
        return
    _check_int64(what, field, value)
    horizon = now_ns + limits.future_horizon_s * NS
    if value > horizon:
        raise _bad(
            what,
            f"args.{field}: {value} is more than {limits.future_horizon_s} s after GPS now "
            f"({now_ns}; future_horizon_s)",
        )


def _check_stream_times(what: str, args: StreamArgs, limits: Limits, now_ns: int) -> None:
    _check_time(what, "start", args.start, limits, now_ns)
    for field in ("end", "replay_start", "replay_end"):
        value = getattr(args, field)
        if value is not None:
            _check_int64(what, field, value)
    if args.start is not None and args.end is not None:
        if args.end <= args.start:
            raise _bad(what, f"args.end: end {args.end} is not after start {args.start}")
        span = args.end - args.start
        if span > limits.max_span_s * NS:
            raise _bad(
                what,
                f"args.end: the request spans {span // NS} s, limit {limits.max_span_s} s "
                "(max_span_s); split it",
            )


# --------------------------------------------------------------------------- patterns


def check_pattern(what: str, pattern: str, limits: Limits) -> None:
    """Refuse a Find/Count pattern that is too long, or that Python's backtracking ``re``
    (what downstreams match with) may take exponential time on.

    The rule is conservative, the way safe-regex tools do it: no quantified group may
    contain another variable quantifier or an alternation (``(a+)+``, ``(.*.*)*``,
    ``(a|aa)*``: "star height" above one), and at most 10 unbounded quantifiers in all
    (``.*.*.*...`` is polynomial of that degree). Character classes, anchors and bounded
    single quantifiers, everything channel patterns use, pass.
    """
    if len(pattern) > limits.max_pattern_length:
        raise _bad(
            what,
            f"args.pattern: {len(pattern)} characters, limit {limits.max_pattern_length}: "
            f"{shorten(repr(pattern), 60)}",
        )
    try:
        parsed = _parser.parse(pattern)
    except Exception:  # an invalid pattern is reported by the envelope's own check
        return
    unbounded = [0]
    problem = _unsafe(list(parsed), unbounded, inside_repeat=False)
    if problem is None and unbounded[0] > 10:
        problem = f"{unbounded[0]} unbounded quantifiers (limit 10)"
    if problem is not None:
        raise _bad(
            what,
            f"args.pattern: {shorten(repr(pattern), 80)} may take exponential time to "
            f"match ({problem}); simplify it",
        )


def _unsafe(items: list[tuple[Any, Any]], unbounded: list[int], inside_repeat: bool) -> str | None:
    """The first dangerous construct in a parsed pattern, or None."""
    for op, arg in items:
        name = str(op)
        if name in _REPEATS:
            low, high, body = arg
            varies = high != low
            if high == _parser.MAXREPEAT:
                unbounded[0] += 1
            if inside_repeat and varies:
                return "a variable quantifier inside a quantified group"
            found = _unsafe(list(body), unbounded, inside_repeat or high > 1)
            if found is not None:
                return found
        elif name == "BRANCH":
            if inside_repeat:
                return "an alternation inside a quantified group"
            for branch in arg[1]:
                found = _unsafe(list(branch), unbounded, inside_repeat)
                if found is not None:
                    return found
        elif name == "SUBPATTERN":
            found = _unsafe(list(arg[-1]), unbounded, inside_repeat)
            if found is not None:
                return found
        elif name in ("ASSERT", "ASSERT_NOT", "ATOMIC_GROUP"):
            body = arg[-1] if name != "ATOMIC_GROUP" else arg
            found = _unsafe(list(body), unbounded, inside_repeat)
            if found is not None:
                return found
        elif name == "GROUPREF_EXISTS":
            for branch in arg[1:]:
                if branch is not None:
                    found = _unsafe(list(branch), unbounded, inside_repeat)
                    if found is not None:
                        return found
    return None


# --------------------------------------------------------------------------- time arithmetic


def align_down(t: int, step: int) -> int:
    """``t`` rounded down to a multiple of ``step`` (> 0), refused outside ``[0, INT64_MAX]``."""
    return _in_int64(t - t % step, t)


def align_up(t: int, step: int) -> int:
    """``t`` rounded up to a multiple of ``step`` (> 0), refused when that leaves int64
    (``end 9223372036854775807`` on a 1 s grid would otherwise become a time that wraps)."""
    return _in_int64(-((-t) // step) * step, t)


def _in_int64(aligned: int, t: int) -> int:
    if not 0 <= aligned <= INT64_MAX:
        raise _bad(
            "request",
            f"GPS time {t} ns aligned to the block grid is {aligned}, outside int64",
        )
    return aligned
