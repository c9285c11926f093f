"""Request envelopes: encode/parse round trip, schema errors, unknown arguments, semantics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from router.protocol import envelope as env
from router.protocol.envelope import (
    SCHEMA_VERSION,
    DescribeArgs,
    Envelope,
    FindArgs,
    PublishArgs,
    StreamArgs,
    parse_envelope,
)
from router.protocol.errors import InvalidRequestError, ReplayError, UnknownArgumentsError

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
GPS = st.none() | INT64
NAME = st.builds(
    lambda d, s, r: f"{d}:{s}-{r}",
    st.sampled_from(["H1", "L1", "V1", "X1:A"]),
    st.text("ABCDEFGHIJKLMNOP", min_size=0, max_size=4),
    st.text("ABCXYZ_019-", max_size=12),
)
OPT_STR = st.none() | st.text(max_size=8)


@st.composite
def stream_args(draw: st.DrawFn) -> StreamArgs:
    chans = tuple(draw(st.lists(NAME, max_size=6, unique=True)))
    start, end = draw(GPS), draw(GPS)
    if start is not None and end is not None and start > end:
        start, end = end, start
    mode = draw(st.sampled_from(["none", "id", "window"]))
    if mode == "id":
        return StreamArgs(chans, start, end, None, None, draw(st.text(max_size=8)))
    if mode == "window":
        a, b = sorted(draw(st.lists(INT64, min_size=2, max_size=2, unique=True)))
        return StreamArgs(chans, start, end, a, b, None)
    return StreamArgs(chans, start, end)


find_args = st.builds(
    lambda dt, lo, hi, pub, t, r: FindArgs("H1:.*", dt, min(lo, hi), max(lo, hi), pub, t, r),
    st.lists(st.sampled_from(["uint32", "uint64", "int32", "int64", "float32", "float64"])).map(
        tuple
    ),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.lists(st.text(max_size=5)).map(tuple),
    GPS,
    OPT_STR,
)
describe_args = st.builds(
    DescribeArgs, st.lists(NAME, max_size=5, unique=True).map(tuple), GPS, OPT_STR
)
publish_args = st.builds(PublishArgs, st.text(max_size=10), OPT_STR)

envelopes = st.one_of(
    st.builds(
        Envelope, st.sampled_from(["Find", "Count"]), find_args, st.none() | st.just("0.5.0")
    ),
    st.builds(Envelope, st.just("Describe"), describe_args),
    st.builds(Envelope, st.just("Stream"), stream_args()),
    st.builds(Envelope, st.sampled_from(["Publish", "Partition"]), publish_args),
)


@given(envelopes)
def test_encode_parse_round_trip(e: Envelope) -> None:
    data = e.encode()
    assert parse_envelope(data) == e
    doc = json.loads(data)
    # every argument present, in the client's order
    assert list(doc["args"]) == [f for f in type(e.args).__dataclass_fields__]
    assert ("version" in doc) == (e.version is not None)


def test_encoding_matches_client_layout() -> None:
    e = Envelope("Stream", StreamArgs(("H1:GDS-CALIB_STRAIN",), 1400000000000000000, None))
    assert e.encode() == (
        b'{"request": "Stream", "args": {"channels": ["H1:GDS-CALIB_STRAIN"], '
        b'"start": 1400000000000000000, "end": null, "replay_start": null, '
        b'"replay_end": null, "replay_id": null}, "version": "0.5.0"}'
    )


def test_big_integers_are_exact() -> None:
    t = 1400000000029999971
    e = parse_envelope(
        b'{"request": "Describe", "args": {"channels": ["H1:A"], "time": 1400000000029999971}}'
    )
    assert isinstance(e.args, DescribeArgs)
    assert e.args.time == t
    assert e.version is None


def test_replace_changes_args_only() -> None:
    e = Envelope("Stream", StreamArgs(("H1:A", "H1:B"), 10, 20))
    r = e.replace(channels=["H1:B"], start=12)
    assert r.args == StreamArgs(("H1:B",), 12, 20)
    assert r.version == SCHEMA_VERSION and r.request == "Stream"


def test_extra_top_level_keys_tolerated() -> None:
    e = parse_envelope(
        b'{"request": "Publish", "args": {"publisher_id": "X"}, "version": "0.5.0", "x": 1}'
    )
    assert e.args == PublishArgs("X")


def _stream(**args: object) -> bytes:
    base: dict[str, object] = {"channels": ["H1:A"], "start": None, "end": None}
    base.update(args)
    return json.dumps({"request": "Stream", "args": base, "version": "0.5.0"}).encode()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "invalid request: not UTF-8 text"),
        (b"{", "invalid request: not JSON"),
        (b"[1]", "invalid request: expected a JSON object, got list"),
        (b'{"args": {}}', "invalid request: envelope: 'request' is a required property"),
        (b'{"request": "Foo", "args": {}}', "invalid request: request: 'Foo' is not one of"),
        (b'{"request": "Find", "args": []}', "invalid request: args: [] is not of type 'object'"),
        (
            _stream(start="abc"),
            "invalid Stream request: args.start: 'abc' is not of type 'integer', 'null'",
        ),
        (_stream(start=1.5), "invalid Stream request: args.start: 1.5 is not of type"),
        (_stream(start=2.0), "invalid Stream request: args.start: 2.0 is not an integer"),
        (
            _stream(end=2**63),
            "invalid Stream request: args.end: 9223372036854775808 is greater than",
        ),
        (
            _stream(channels=["H1:A", 3]),
            "invalid Stream request: args.channels[1]: 3 is not of type 'string'",
        ),
        (
            _stream(channels=["H1:A", "NOCOLON", "X"]),
            "args.channels: channel name(s) without ':' (domain:subsystem...): 'NOCOLON', 'X'",
        ),
        (_stream(start=5, end=4), "invalid Stream request: args.start: start 5 is after end 4"),
        (
            json.dumps(
                {
                    "request": "Count",
                    "args": {
                        "pattern": "(",
                        "data_type": [],
                        "min_rate": 0,
                        "max_rate": 1,
                        "publisher": [],
                        "time": None,
                    },
                }
            ).encode(),
            "invalid Count request: args.pattern: invalid regular expression '('",
        ),
        (
            json.dumps(
                {
                    "request": "Find",
                    "args": {
                        "pattern": "",
                        "data_type": [],
                        "min_rate": 5,
                        "max_rate": 1,
                        "publisher": [],
                        "time": None,
                    },
                }
            ).encode(),
            "invalid Find request: args.min_rate: min_rate 5 exceeds max_rate 1",
        ),
        (
            json.dumps(
                {
                    "request": "Find",
                    "args": {
                        "pattern": "",
                        "data_type": [],
                        "min_rate": 0,
                        "max_rate": -1,
                        "publisher": [],
                        "time": None,
                    },
                }
            ).encode(),
            "invalid Find request: args.max_rate: -1 is less than the minimum of 0",
        ),
        (
            json.dumps(
                {
                    "request": "Find",
                    "args": {
                        "pattern": "",
                        "data_type": ["float"],
                        "min_rate": 0,
                        "max_rate": 1,
                        "publisher": [],
                        "time": None,
                    },
                }
            ).encode(),
            "invalid Find request: args.data_type[0]: 'float' is not one of",
        ),
        (
            b'{"request": "Describe", "args": {"channels": []}}',
            "invalid Describe request: args: 'time' is a required property",
        ),
    ],
)
def test_invalid_requests_name_field_and_problem(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_envelope(data)
    assert str(info.value).startswith(message) or message in str(info.value)


def test_unknown_arguments_upstream_text() -> None:
    with pytest.raises(UnknownArgumentsError) as info:
        parse_envelope(_stream(time=4, zeta=1))
    assert str(info.value) == (
        "unknown Stream argument(s): time, zeta (request schema 0.5.0; server schema 0.5.0)"
    )
    data = json.dumps({"request": "Publish", "args": {"publisher_id": "P", "x": 1}}).encode()
    with pytest.raises(UnknownArgumentsError) as info:
        parse_envelope(data)
    assert str(info.value) == (
        "unknown Publish argument(s): x (request predates schema versioning; server schema 0.5.0)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"replay_id": "R", "replay_start": 1, "replay_end": 2}, "mutually exclusive"),
        ({"replay_start": 1}, "both replay_start and replay_end must be provided together"),
        ({"replay_start": 2, "replay_end": 2}, "replay_start must be less than replay_end"),
    ],
)
def test_replay_argument_rules(args: dict[str, object], message: str) -> None:
    with pytest.raises(ReplayError, match=message):
        parse_envelope(_stream(**args))


def test_schema_files_are_valid_and_complete() -> None:
    folder = env.schema_dir()
    assert folder == Path(env.__file__).resolve().parents[2] / "schemas" / "requests"
    names = {p.stem for p in folder.glob("*.json")}
    assert names == {"envelope"} | {k.lower() for k in env.REQUEST_KINDS}
    for kind in env.REQUEST_KINDS:
        declared = set(json.loads((folder / f"{kind.lower()}.json").read_text())["properties"])
        assert declared == set(env.ARGS_CLASSES[kind].__dataclass_fields__)


def test_envelope_rejects_mismatched_args() -> None:
    with pytest.raises(TypeError):
        Envelope("Stream", FindArgs())
    with pytest.raises(ValueError):
        Envelope("Nope", FindArgs())


def test_duplicate_channels_are_dropped_first_occurrence_kept() -> None:
    got = parse_envelope(_stream(channels=["H1:B", "H1:A", "H1:B", "H1:A", "H1:C"]))
    assert isinstance(got.args, StreamArgs)
    assert got.args.channels == ("H1:B", "H1:A", "H1:C")


@pytest.mark.parametrize(
    "data",
    [b"[" * 100_000, b"[" * 1000 + b"]" * 1000, b'{"a": ' * 40 + b"1" + b"}" * 40],
)
def test_deep_nesting_is_an_invalid_request(data: bytes) -> None:
    with pytest.raises(InvalidRequestError, match="nested deeper than 32 levels"):
        parse_envelope(data)


def test_nesting_limit_counts_levels() -> None:
    doc = {"request": "Stream", "args": {"channels": ["H1:A"], "start": 1, "end": 2}}
    parse_envelope(json.dumps(doc).encode(), max_depth=3)
    with pytest.raises(InvalidRequestError, match="nested deeper than 2 levels"):
        parse_envelope(json.dumps(doc).encode(), max_depth=2)


def test_long_values_are_shortened_in_messages() -> None:
    with pytest.raises(InvalidRequestError) as info:
        parse_envelope(_stream(channels="x" * 1_000_000))
    assert len(str(info.value)) < 400 and "characters)" in str(info.value)
    with pytest.raises(InvalidRequestError) as info:
        parse_envelope(_stream(channels=[f"NOCOLON{i}" for i in range(1000)]))
    assert len(str(info.value)) < 800 and "and 980 more" in str(info.value)


def test_pattern_length_checked_before_compiling() -> None:
    doc = {
        "request": "Count",
        "args": {
            "pattern": "(" * 500_000,
            "data_type": [],
            "min_rate": 0,
            "max_rate": 1,
            "publisher": [],
            "time": None,
        },
    }
    with pytest.raises(InvalidRequestError, match="pattern: 500000 characters, limit 1024"):
        parse_envelope(json.dumps(doc).encode(), max_pattern=1024)
    doc["args"]["pattern"] = "a{4294967296}"  # type: ignore[index]
    with pytest.raises(InvalidRequestError, match=r"args\.pattern"):
        parse_envelope(json.dumps(doc).encode())
