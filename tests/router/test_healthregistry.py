"""The health registry, the guarded pool seam and the service's use of them, over scripted
in-memory downstreams and a fake monotonic clock (no sleeps, no sockets)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from structlog.testing import capture_logs

from router.context import RequestContext
from router.downstream import Call, StaticPool
from router.errors import (
    CancelledError,
    ChannelsNotAvailableError,
    InternalError,
    TimedOutError,
    UnavailableError,
    is_retryable,
)
from router.fanout import ReplicaFeed, fetch_first
from router.healthpolicy import Policy, State
from router.healthpool import HealthPool
from router.healthregistry import HealthRegistry
from router.protocol.arrow import metadata_batches
from router.protocol.channel import ChannelMeta
from router.protocol.envelope import DescribeArgs, FindArgs
from router.protocol.gps import FakeClock
from router.service import RouterService, Settings
from router.streaming import batch_end
from router.timers import Timer
from scopemap import ScopeMap, load_text
from tests.router.blockgen import downstream_blocks, grid_for, meta
from tests.router.scripted import HANG, ScriptedDownstream


class Tick:
    """A fake monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def load(text: str) -> ScopeMap:
    result = load_text(text, "m.yaml")
    assert result.scope_map is not None, [d.format() for d in result.diagnostics]
    return result.scope_map


def endpoint(url: str, domain: str, claim: str = "all: true") -> str:
    return f"""{url}:
  scopes:
    {domain}:
      - {claim}
  retention: {{newest: 0, oldest: .inf}}
"""


A, B, C, V = "grpc://a:1", "grpc://b:1", "grpc://c:1", "grpc://v:1"
STRIDE = 62_500_000
CHANNEL = meta("H1:A-X", 256, STRIDE)
GRID = grid_for([CHANNEL], STRIDE)
H1_ABC = load(endpoint(A, "H1") + endpoint(B, "H1") + endpoint(C, "H1"))


def registry(max_calls: int = 0, **policy: Any) -> tuple[HealthRegistry, Tick]:
    tick = Tick()
    reg = HealthRegistry(Policy(**policy), max_calls=max_calls, monotonic=tick)
    reg.track(H1_ABC)
    return reg, tick


def test_order_puts_healthy_first_suspect_next_ejected_last_and_keeps_map_order() -> None:
    reg, _ = registry(eject_after=2)
    assert reg.order([A, B, C]) == (A, B, C)
    reg.record_failure(A, "timed_out")  # suspect
    assert reg.order([A, B, C]) == (B, C, A)
    reg.record_failure(B, "unavailable")
    reg.record_failure(B, "unavailable")  # ejected
    assert reg.order([A, B, C]) == (C, A, B)
    assert reg.order([B, A]) == (A, B)
    reg.record_success(B)
    assert reg.order([A, B, C]) == (B, C, A)
    assert reg.order(["grpc://unknown:1", A]) == ("grpc://unknown:1", A)


def test_every_state_change_is_logged_once_with_endpoint_and_reason() -> None:
    reg, tick = registry(eject_after=2, base_ejection=10.0, active_checks=False)
    with capture_logs() as logs:
        reg.record_failure(A, "timed_out")
        reg.record_failure(A, "timed_out")
        reg.record_failure(A, "timed_out")  # still ejected: no change
        tick.now += 10  # the period ends (no active checks): back on probation when looked at
        reg.order([A, B])
        reg.snapshot()
        reg.record_success(A)
    changes = [(e["endpoint"], e["old"], e["new"], e["reason"]) for e in logs]
    assert changes == [
        (A, "healthy", "suspect", "timed_out"),
        (A, "suspect", "ejected", "timed_out"),
        (A, "ejected", "suspect", "ejection period over"),
        (A, "suspect", "healthy", "answered"),
    ]
    assert all(e["event"] == "endpoint_health_changed" for e in logs)
    assert logs[1]["log_level"] == "warning" and logs[1]["ejected_for_s"] == 10.0


def test_track_follows_reloads() -> None:
    reg, _ = registry()
    reg.record_check(A, False, "refused")
    reg.track(load(endpoint(A, "H1") + endpoint(V, "V1")))
    assert reg.endpoints() == (A, V)
    assert reg.state_of(A) is State.DOWN  # kept its health
    assert reg.state_of(V) is State.HEALTHY
    assert reg.state_of(B) is None
    reg.record_failure(B, "timed_out")  # a URL no longer in the map: ignored
    assert reg.state_of(B) is None


def test_readiness_needs_an_endpoint_up_in_every_domain() -> None:
    reg, _ = registry()
    reg.track(load(endpoint(A, "H1") + endpoint(B, "H1") + endpoint(V, "V1")))
    assert reg.snapshot().ready
    reg.record_check(A, False, "refused")
    assert reg.snapshot().ready  # B still serves H1
    reg.record_check(V, False, "deadline")
    snap = reg.snapshot()
    assert not snap.ready and snap.unready_domains == ["V1"]
    body = snap.readiness_json()
    assert body["ready"] is False
    assert body["domains_without_healthy_endpoint"] == ["V1"]
    assert {e["endpoint"]: e["state"] for e in body["endpoints_not_up"]} == {
        A: "down",
        V: "down",
    }
    assert body["endpoints_not_up"][1]["last_failure"] == "check failed: deadline"
    reg.record_check(V, True)
    assert reg.snapshot().ready


def test_in_flight_cap_is_a_try_acquire() -> None:
    reg, _ = registry(max_calls=2)
    assert reg.try_acquire(A) and reg.try_acquire(A)
    assert not reg.try_acquire(A)
    assert reg.try_acquire(B)
    reg.release(A)
    assert reg.try_acquire(A)
    assert {e.url: e.overflows for e in reg.snapshot().endpoints} == {A: 1, B: 0, C: 0}
    assert reg.in_flight(A) == 2


def meta(name: str) -> ChannelMeta:
    return ChannelMeta(name, "float32", 16)


def test_guarded_pool_records_outcomes_by_cause() -> None:
    reg, _ = registry(eject_after=5)
    a = ScriptedDownstream(A, answers={"Describe": TimedOutError("deadline")})
    pool = HealthPool(StaticPool({A: a}), reg)
    call = Call("r1", 1.0, "Describe")
    for error, expected in [
        (TimedOutError("deadline"), State.SUSPECT),
        (ChannelsNotAvailableError(["H1:X"]), State.HEALTHY),  # it answered: alive
        (InternalError("garbage"), State.SUSPECT),
        (CancelledError("client left"), State.SUSPECT),  # says nothing either way
    ]:
        a.answers["Describe"] = error
        with pytest.raises(type(error)):
            pool.get(A).fetch(b'{"request": "Describe"}', call)
        assert reg.state_of(A) is expected, error
    assert reg.in_flight(A) == 0


def test_over_the_cap_a_call_moves_to_the_next_replica_without_blaming_the_endpoint() -> None:
    reg, _ = registry(max_calls=1)
    a = ScriptedDownstream(A, streams=[[]])
    b = ScriptedDownstream(B, answers={"Describe": metadata_batches([meta("H1:X")])})
    pool = HealthPool(StaticPool({A: a, B: b}), reg)
    call = Call("r1", 1.0, "Describe")
    stream = pool.get(A).stream(b'{"request": "Stream"}', call)  # holds A's only slot
    with pytest.raises(UnavailableError, match="max-downstream-calls") as info:
        pool.get(A).fetch(b'{"request": "Describe"}', call)
    assert is_retryable(info.value)
    url, _ = fetch_first(pool, [A, B], b'{"request": "Describe"}', call)
    assert url == B
    assert reg.state_of(A) is State.HEALTHY
    assert list(stream) == []  # the stream ends: its slot comes back
    assert reg.in_flight(A) == 0
    stream.close()  # idempotent release
    assert reg.in_flight(A) == 0
    closed_early = pool.get(A).stream(b'{"request": "Stream"}', call)
    assert reg.in_flight(A) == 1
    closed_early.close()
    assert reg.in_flight(A) == 0


def test_a_stream_reset_mid_way_counts_against_the_endpoint() -> None:
    reg, _ = registry()
    a = ScriptedDownstream(A, streams=[[UnavailableError("reset by peer")]])
    pool = HealthPool(StaticPool({A: a}), reg)
    stream = pool.get(A).stream(b'{"request": "Stream"}', Call("r1"))
    with pytest.raises(UnavailableError):
        list(stream)
    assert reg.state_of(A) is State.SUSPECT and reg.in_flight(A) == 0


# --------------------------------------------------------------------------- the service

NOW_NS = 1_400_000_000 * 10**9


def service_over(text: str, members: dict[str, ScriptedDownstream]) -> RouterService:
    return RouterService(
        load(text),
        Settings(describe_ttl=0, health_interval=0),
        pool=StaticPool(dict(members)),
        clock=FakeClock(NOW_NS),
    )


def test_describe_asks_a_replica_that_failed_only_once() -> None:
    a = ScriptedDownstream(A, answers={"Describe": TimedOutError("deadline on grpc://a:1")})
    b = ScriptedDownstream(B, answers={"Describe": metadata_batches([meta("H1:X")])})
    service = service_over(endpoint(A, "H1") + endpoint(B, "H1"), {A: a, B: b})
    try:
        for _ in range(5):
            found = service.describe(DescribeArgs(("H1:X",)), RequestContext("r"))
            assert found["H1:X"].name == "H1:X"
        assert len(a.commands) == 1 and len(b.commands) == 5
    finally:
        service.close()


H1L1V1 = (
    endpoint(A, "H1")
    + endpoint(B, "L1", "subsystem: GDS")
    + endpoint(C, "L1", "subsystem: PEM")
    + endpoint(V, "V1")
)


def test_find_asks_only_endpoints_whose_scopes_can_match_and_names_a_missing_one() -> None:
    members = {
        A: ScriptedDownstream(A, answers={"Find": metadata_batches([meta("H1:A")])}),
        B: ScriptedDownstream(B, answers={"Find": metadata_batches([meta("L1:GDS-A")])}),
        C: ScriptedDownstream(C, answers={"Find": metadata_batches([meta("L1:PEM-A")])}),
        V: ScriptedDownstream(V, answers={"Find": UnavailableError("connect refused")}),
    }
    service = service_over(H1L1V1, members)
    try:
        assert [m.name for m in service.find(FindArgs("H1:.*"), None, RequestContext("r"))] == [
            "H1:A"
        ]
        assert [m.name for m in service.find(FindArgs("L1:GDS.*"), None, RequestContext("r"))] == [
            "L1:GDS-A"
        ]
        assert service.find(FindArgs("X1:.*"), None, RequestContext("r")) == []
        assert not members[V].commands and len(members[C].commands) == 0
        with pytest.raises(UnavailableError) as info:
            service.find(FindArgs(".*"), None, RequestContext("r"))
        text = str(info.value)
        assert V in text and "V1:*" in text and "connect refused" in text
        assert len(text) < 4096
    finally:
        service.close()


def test_server_info_reports_health() -> None:
    import json

    service = service_over(H1L1V1, {})
    try:
        service.health.record_check(V, False, "refused")
        info = json.loads(service.action("server-info"))
        assert info["health"]["ready"] is False
        assert info["health"]["domains_without_healthy_endpoint"] == ["V1"]
        assert info["router"] == "arrakis-router"  # the fields upstream clients read stay
    finally:
        service.close()


# --------------------------------------------------------------------------- stateful


class RegistryMachine(RuleBasedStateMachine):
    """Any mix of outcomes, checks, time passing and in-flight calls: the order is always a
    permutation with the ejected/down endpoints last, the cap is never exceeded, readiness
    agrees with the endpoint states, and a success always makes the endpoint healthy."""

    URLS = (A, B, C)

    def __init__(self) -> None:
        super().__init__()
        self.tick = Tick()
        self.reg = HealthRegistry(
            Policy(eject_after=2, base_ejection=5.0), max_calls=2, monotonic=self.tick
        )
        self.reg.track(H1_ABC)
        self.held: dict[str, int] = dict.fromkeys(self.URLS, 0)

    @rule(url=st.sampled_from(URLS))
    def success(self, url: str) -> None:
        self.reg.record_success(url)
        assert self.reg.state_of(url) is State.HEALTHY

    @rule(url=st.sampled_from(URLS), kind=st.sampled_from(["timed_out", "unavailable"]))
    def failure(self, url: str, kind: str) -> None:
        self.reg.record_failure(url, kind)
        assert self.reg.state_of(url) is not State.HEALTHY

    @rule(url=st.sampled_from(URLS), ok=st.booleans())
    def check(self, url: str, ok: bool) -> None:
        self.reg.record_check(url, ok, None if ok else "refused")
        if not ok:
            assert self.reg.state_of(url) in (State.DOWN, State.EJECTED)

    @rule(seconds=st.floats(0, 20))
    def wait(self, seconds: float) -> None:
        self.tick.now += seconds

    @rule(url=st.sampled_from(URLS))
    def acquire(self, url: str) -> None:
        if self.reg.try_acquire(url):
            self.held[url] += 1

    @rule(url=st.sampled_from(URLS))
    def release(self, url: str) -> None:
        if self.held[url]:
            self.held[url] -= 1
            self.reg.release(url)

    @invariant()
    def consistent(self) -> None:
        order = self.reg.order(list(self.URLS))
        assert sorted(order) == sorted(self.URLS)
        states = [self.reg.state_of(u) for u in order]
        ranks = [0 if s is State.HEALTHY else 1 if s is State.SUSPECT else 2 for s in states]
        assert ranks == sorted(ranks)
        snap = self.reg.snapshot()
        for e in snap.endpoints:
            assert e.in_flight == self.held[e.url] <= 2
        assert snap.ready == any(e.state.is_up for e in snap.endpoints)


TestRegistryMachine = RegistryMachine.TestCase


def _feed_over(pool: HealthPool, urls: list[str], end: int, **kw: object) -> ReplicaFeed:
    return ReplicaFeed(
        pool,
        RequestContext("r1"),
        urls,
        lambda resume: json.dumps({"request": "Stream", "args": {"start": resume}}).encode(),
        Call("r1", timeout=1.0, what="Stream"),
        start=0,
        end=end,
        batch_end=batch_end(GRID),
        timer=Timer(),
        label="[0, 1) {A}",
        retry_backoff=0.01,
        **kw,  # type: ignore[arg-type]
    )


def test_a_stream_silent_past_the_idle_timeout_counts_against_its_endpoint() -> None:
    reg, _ = registry()
    blocks = downstream_blocks([CHANNEL], [0, STRIDE, 2 * STRIDE], STRIDE)
    a = ScriptedDownstream(A, [[blocks[0], HANG]])
    b = ScriptedDownstream(B, [blocks[1:]])
    pool = HealthPool(StaticPool({A: a, B: b}), reg)
    feed = _feed_over(pool, [A, B], 3 * STRIDE, idle_timeout=0.2)
    assert [b.column(0)[0].as_py() for b in feed] == [0, STRIDE, 2 * STRIDE]
    assert reg.state_of(A) is State.SUSPECT
    assert reg.state_of(B) is State.HEALTHY
    assert reg.in_flight(A) == reg.in_flight(B) == 0


def test_a_stream_ending_early_counts_against_its_endpoint() -> None:
    reg, _ = registry()
    blocks = downstream_blocks([CHANNEL], [0, STRIDE, 2 * STRIDE], STRIDE)
    a = ScriptedDownstream(A, [blocks[:1]])  # a normal end of stream, one block short of two
    b = ScriptedDownstream(B, [blocks[1:]])
    pool = HealthPool(StaticPool({A: a, B: b}), reg)
    feed = _feed_over(pool, [A, B], 3 * STRIDE)
    assert [b.column(0)[0].as_py() for b in feed] == [0, STRIDE, 2 * STRIDE]
    assert reg.state_of(A) is State.SUSPECT
    assert reg.state_of(B) is State.HEALTHY
