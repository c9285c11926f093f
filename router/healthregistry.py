"""The health registry: the router's only mutable health state, thread-safe.

It holds one :class:`~router.healthpolicy.Health` per endpoint of the active map and the
in-flight call count per endpoint; every decision is a pure function of
:mod:`router.healthpolicy`, applied under one lock on the injected monotonic clock.

* ``record_success(url)`` / ``record_failure(url, kind)``: outcomes of real calls (the
  downstream seam reports them, :mod:`router.healthpool`); ``record_check(url, ok)``:
  active checks (:mod:`router.healthcheck`).
* ``order(urls)``: replicas healthy first, then suspect, then down or ejected; ties keep the
  map's order. Ejected endpoints stay in the list (still tried when nothing else can serve).
* ``try_acquire(url)`` / ``release(url)``: the in-flight cap (a circuit breaker): over the
  cap a call fails at once and the caller moves on to the next replica instead of queueing.
* ``snapshot()``: a frozen view for readiness, ``server-info``, metrics and status pages.

Every state change (whatever caused it, including an ejection period ending) is logged once
as ``endpoint_health_changed`` with the endpoint, the old and new state and the reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from router.healthpolicy import (
    Health,
    Policy,
    State,
    checked,
    failed,
    rank,
    state,
    succeeded,
)
from scopemap import ScopeMap

__all__ = ["EndpointStatus", "HealthCollector", "HealthRegistry", "HealthSnapshot"]

log = structlog.get_logger("router.health")


@dataclass(frozen=True)
class EndpointStatus:
    url: str
    state: State
    failures: int
    ejections: int
    in_flight: int
    ejected_for: float  # seconds left in the current ejection (0 when not ejected)
    last_failure: str | None
    domains: tuple[str, ...]
    overflows: int = 0  # calls refused at the in-flight cap so far

    def as_json(self) -> dict[str, Any]:
        return {
            "endpoint": self.url,
            "state": self.state.value,
            "consecutive_failures": self.failures,
            "ejections": self.ejections,
            "in_flight": self.in_flight,
            "ejected_for_s": round(self.ejected_for, 3),
            "last_failure": self.last_failure,
            "domains": list(self.domains),
        }


@dataclass(frozen=True)
class HealthSnapshot:
    """What is up, at one instant. ``ready``: a map is loaded and every domain in it has at
    least one endpoint that is up (healthy or suspect)."""

    endpoints: tuple[EndpointStatus, ...]
    domains: dict[str, tuple[str, ...]] = field(default_factory=dict)  # domain -> endpoints
    loaded: bool = True

    @property
    def unready_domains(self) -> list[str]:
        up = {e.url for e in self.endpoints if e.state.is_up}
        return sorted(d for d, urls in self.domains.items() if not any(u in up for u in urls))

    @property
    def ready(self) -> bool:
        return self.loaded and not self.unready_domains

    def readiness_json(self) -> dict[str, Any]:
        """The body of ``/readyz`` and the ``health`` field of ``server-info``."""
        return {
            "ready": self.ready,
            "map_loaded": self.loaded,
            "domains_without_healthy_endpoint": self.unready_domains,
            "endpoints_not_up": [e.as_json() for e in self.endpoints if not e.state.is_up],
            "endpoints_up": sum(e.state.is_up for e in self.endpoints),
            "endpoints_total": len(self.endpoints),
        }


class HealthRegistry:
    """Health and in-flight counts of the active map's endpoints (see the module docstring).
    ``max_calls``: in-flight cap per endpoint (0: none)."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        max_calls: int = 0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_calls < 0:
            raise ValueError(f"max_calls must be >= 0, got {max_calls}")
        self.policy = policy or Policy()
        self.max_calls = max_calls
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._health: dict[str, Health] = {}
        self._in_flight: dict[str, int] = {}
        self._reported: dict[str, State] = {}
        self._domains: dict[str, tuple[str, ...]] = {}  # domain -> endpoint urls
        self._endpoint_domains: dict[str, tuple[str, ...]] = {}
        self._loaded = False
        self._overflows: dict[str, int] = {}  # calls refused at the cap, per endpoint

    def __repr__(self) -> str:
        snap = self.snapshot()
        states = {e.url: e.state.value for e in snap.endpoints}
        return f"<HealthRegistry ready={snap.ready} {states}>"

    # ------------------------------------------------------------------ the map
    def track(self, scope_map: ScopeMap) -> None:
        """Follow the active map: endpoints that stay keep their health, new ones start
        healthy, gone ones are forgotten (call it at start and on every reload)."""
        now = self._monotonic()
        domains: dict[str, list[str]] = {}
        endpoint_domains: dict[str, tuple[str, ...]] = {}
        for ep in scope_map.endpoints:
            endpoint_domains[ep.url] = ep.domains
            for d in ep.domains:
                domains.setdefault(d, []).append(ep.url)
        with self._lock:
            self._health = {u: self._health.get(u, Health(since=now)) for u in endpoint_domains}
            self._reported = {u: self._reported.get(u, State.HEALTHY) for u in endpoint_domains}
            self._domains = {d: tuple(us) for d, us in domains.items()}
            self._endpoint_domains = endpoint_domains
            self._loaded = True

    def endpoints(self) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._health)

    # ------------------------------------------------------------------ outcomes
    def record_success(self, url: str) -> None:
        self._apply(url, lambda h, now: succeeded(h, now, self.policy), "answered")

    def record_failure(self, url: str, kind: str) -> None:
        self._apply(url, lambda h, now: failed(h, now, self.policy, kind), kind)

    def record_check(self, url: str, ok: bool, error: str | None = None) -> None:
        reason = ("check passed" if ok else f"check failed: {error or 'no answer'}")[:300]
        self._apply(url, lambda h, now: checked(h, now, self.policy, ok, reason), reason)

    def _apply(self, url: str, step: Callable[[Health, float], Health], reason: str) -> None:
        now = self._monotonic()
        with self._lock:
            health = self._health.get(url)
            if health is None:  # not (or no longer) in the map: a redirect location, say
                return
            self._health[url] = step(health, now)
            changes = self._changes(now, reason, (url,))
        _log(changes)

    def _changes(self, now: float, reason: str, urls: Iterable[str]) -> list[dict[str, Any]]:
        """State changes of ``urls`` since last reported (under the lock); marks them
        reported. Most changes follow an outcome; the end of an ejection period without
        active checks is seen when the endpoint is next looked at."""
        out = []
        for url in urls:
            health = self._health.get(url)
            if health is None:
                continue
            new = state(health, now, self.policy)
            old = self._reported.get(url, State.HEALTHY)
            if new is not old:
                self._reported[url] = new
                out.append(
                    {
                        "endpoint": url,
                        "old": old.value,
                        "new": new.value,
                        "reason": reason,
                        "consecutive_failures": health.failures,
                        "ejections": health.ejections,
                        "ejected_for_s": round(max(0.0, (health.ejected_until or now) - now), 3),
                    }
                )
        return out

    # ------------------------------------------------------------------ ordering
    def order(self, urls: Sequence[str]) -> tuple[str, ...]:
        """``urls`` healthy first, ejected last; a stable sort (the map's preference stays
        among equals). Unknown URLs rank as healthy."""
        if len(urls) < 2:
            return tuple(urls)
        now = self._monotonic()
        with self._lock:
            ranks = [
                rank(self._health[u], now, self.policy) if u in self._health else 0 for u in urls
            ]
            changes = self._changes(now, "ejection period over", urls)
        _log(changes)
        if not any(ranks):
            return tuple(urls)
        return tuple(u for _, _, u in sorted(zip(ranks, range(len(urls)), urls, strict=True)))

    # ------------------------------------------------------------------ in-flight cap
    def try_acquire(self, url: str) -> bool:
        """Take one in-flight slot of ``url``; False (at once) when it is at the cap."""
        with self._lock:
            n = self._in_flight.get(url, 0)
            if self.max_calls and n >= self.max_calls:
                self._overflows[url] = self._overflows.get(url, 0) + 1
                return False
            self._in_flight[url] = n + 1
            return True

    def release(self, url: str) -> None:
        with self._lock:
            n = self._in_flight.get(url, 0) - 1
            if n > 0:
                self._in_flight[url] = n
            else:
                self._in_flight.pop(url, None)

    def in_flight(self, url: str) -> int:
        with self._lock:
            return self._in_flight.get(url, 0)

    # ------------------------------------------------------------------ views
    def snapshot(self) -> HealthSnapshot:
        now = self._monotonic()
        with self._lock:
            endpoints = tuple(
                EndpointStatus(
                    url=u,
                    state=state(h, now, self.policy),
                    failures=h.failures,
                    ejections=h.ejections,
                    in_flight=self._in_flight.get(u, 0),
                    ejected_for=max(0.0, (h.ejected_until or now) - now),
                    last_failure=h.last_failure,
                    domains=self._endpoint_domains.get(u, ()),
                    overflows=self._overflows.get(u, 0),
                )
                for u, h in self._health.items()
            )
            snap = HealthSnapshot(endpoints, dict(self._domains), self._loaded)
            changes = self._changes(now, "ejection period over", list(self._health))
        _log(changes)
        return snap

    def state_of(self, url: str) -> State | None:
        now = self._monotonic()
        with self._lock:
            health = self._health.get(url)
            return None if health is None else state(health, now, self.policy)


def _log(changes: Iterable[dict[str, Any]]) -> None:
    for change in changes:
        level = log.info if State(change["new"]).is_up else log.warning
        level("endpoint_health_changed", **change)


_STATE_VALUE = {State.HEALTHY: 0, State.SUSPECT: 1, State.DOWN: 2, State.EJECTED: 3}


class HealthCollector(Collector):
    """Prometheus families read from the registry at scrape time (no second copy of state).

    | metric | type | labels |
    | --- | --- | --- |
    | ``arrakis_router_endpoint_up`` | gauge | ``endpoint`` (1: healthy or suspect) |
    | ``arrakis_router_endpoint_state`` | gauge | ``endpoint`` (0 ok 1 suspect 2 down 3 out) |
    | ``arrakis_router_endpoint_consecutive_failures`` | gauge | ``endpoint`` |
    | ``arrakis_router_endpoint_ejections_total`` | counter | ``endpoint`` |
    | ``arrakis_router_downstream_overflows_total`` | counter | ``endpoint`` |
    | ``arrakis_router_ready`` | gauge | (1: ``/readyz`` says 200) |
    """

    def __init__(self, registry: HealthRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        snap = self.registry.snapshot()
        up = GaugeMetricFamily(
            "arrakis_router_endpoint_up",
            "Endpoint healthy or suspect (1) or not",
            labels=["endpoint"],
        )
        st = GaugeMetricFamily(
            "arrakis_router_endpoint_state",
            "Endpoint health: 0 healthy, 1 suspect, 2 down (active check), 3 ejected",
            labels=["endpoint"],
        )
        fails = GaugeMetricFamily(
            "arrakis_router_endpoint_consecutive_failures",
            "Consecutive failed real calls since the endpoint last answered",
            labels=["endpoint"],
        )
        ejections = CounterMetricFamily(
            "arrakis_router_endpoint_ejections",
            "Times the endpoint was ejected (outlier detection)",
            labels=["endpoint"],
        )
        overflows = CounterMetricFamily(
            "arrakis_router_downstream_overflows",
            "Calls refused at once because the endpoint was at --max-downstream-calls",
            labels=["endpoint"],
        )
        for e in snap.endpoints:
            up.add_metric([e.url], 1.0 if e.state.is_up else 0.0)
            st.add_metric([e.url], float(_STATE_VALUE[e.state]))
            fails.add_metric([e.url], float(e.failures))
            ejections.add_metric([e.url], float(e.ejections))
            overflows.add_metric([e.url], float(e.overflows))
        ready = GaugeMetricFamily(
            "arrakis_router_ready", "1 when /readyz answers 200", value=1.0 if snap.ready else 0.0
        )
        yield from (up, st, fails, ejections, overflows, ready)
