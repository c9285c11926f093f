"""The door fuzzer: malformed and extreme requests over every Flight RPC of a running
router (proxy mode, a real mock behind it). The ``ci`` profile runs a few hundred inputs
in ``make test``; ``make fuzz`` runs the ``fuzz`` profile (>= 10,000) and prints the
outcome-class x RPC summary.

Properties (house-plan invariant 3): no INTERNAL, no traceback or source path in any
message, every message <= 4 KB, an answer within 5 s, <= 2 KB of log per input at p99;
afterwards the router still serves a valid fetch and its thread count is back to where
it started."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings

from router.limits import Limits
from router.protocol.gps import gps_now_ns
from tests.fuzz.harness import MAX_LOG_PER_INPUT, CountingSink, Door, Tally, counting_logs
from tests.fuzz.strategies import Probe, probes
from tests.integration.servers import running_router, wait_until

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")
defaults = pytest.importorskip("router_backends.defaults")

NOW_S = gps_now_ns() // 10**9
NAMES = sorted(m.name for m in defaults.default_channels("H1") if m.sample_rate <= 256)[:20]
# the defaults `router serve` uses (the fuzzed future starts lie within 1 s of now, so a
# stream waiting for data that does not exist yet is not mistaken for a hang)
LIMITS = Limits()
# inputs per run: a few hundred in `make test` (ci), the profile's own count under `fuzz`
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
EXAMPLES = {"ci": 300, "dev": 100, "debug": 10}.get(PROFILE, settings().max_examples)


class Target:
    def __init__(self, door: Door, sink: CountingSink, url: str) -> None:
        self.door = door
        self.sink = sink
        self.url = url
        self.tally = Tally()


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    with testing.serve_mock() as mock:
        yaml_text = f"""
{mock}:
  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}
  retention: {{}}
"""
        with counting_logs() as sink, running_router(yaml_text, limits=LIMITS) as (url, _, _):
            door = Door(url, sink)
            warm = _valid_fetch(url)  # connections and caches exist before the baseline
            assert warm
            baseline = _threads()
            t = Target(door, sink, url)
            yield t
            print("\n" + t.tally.summary())  # shown with -s (make fuzz)
            door.close()
            # alive and serving, nothing left running
            assert _valid_fetch(url)
            names = " ".join(sorted(t.name for t in threading.enumerate() if _ours(t)))
            assert wait_until(lambda: _threads() <= baseline, timeout=10), f"{baseline}: {names}"
            logs = sorted(t.tally.log_bytes)
            p99 = logs[min(len(logs) - 1, int(len(logs) * 0.99))]
            assert p99 <= MAX_LOG_PER_INPUT, t.tally.summary()
            assert not t.tally.problems, t.tally.problems[:5]


def _ours(thread: threading.Thread) -> bool:
    """A thread the router started: not one of gRPC's own server threads (seen by Python
    as ``_DummyThread`` once they ran a handler; gRPC sizes that pool itself), not an idle
    worker of the fan-out pool (at most ``Settings.workers``, started on demand, kept)."""
    dummy = isinstance(thread, threading._DummyThread)  # type: ignore[attr-defined]
    return not dummy and not thread.name.startswith("fanout")


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if _ours(t))


def _valid_fetch(url: str) -> bool:
    start = NOW_S - 120
    block = arrakis.Client(url).fetch(NAMES[:2], start, start + 1)
    return all(len(block.data[n]) > 0 for n in NAMES[:2])


@settings(
    max_examples=EXAMPLES,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(probe=probes(NAMES, NOW_S))
def test_every_input_gets_a_bounded_client_error_or_an_answer(target: Target, probe: Probe) -> None:
    answer = target.door.call(probe)
    target.tally.add(answer)
    assert not answer.problems(), answer.problems()


def test_summary_has_every_rpc(target: Target) -> None:
    # runs after the fuzz test (file order): every RPC was exercised
    rpcs = {r for _, r in target.tally.counts}
    assert len(rpcs) >= 6, target.tally.summary()
    assert not math.isnan(sum(target.tally.seconds))
