"""The drain's decisions with an injected clock: wait for open calls up to the deadline,
then end every stream and stop the server, never waiting on a shutdown that hangs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from router.context import SERVER_STOPPING
from router.drain import drain
from router.errors import ShuttingDownError
from router.service import RouterService
from scopemap import load_text

MAP = "grpc://127.0.0.1:1:\n  scopes: {H1: [{all: true}]}\n  retention: {}\n"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def service() -> Iterator[RouterService]:
    result = load_text(MAP, "m.yaml")
    assert result.scope_map is not None
    svc = RouterService(result.scope_map)
    yield svc
    svc.close()


def test_idle_service_drains_at_once(service: RouterService) -> None:
    clock = FakeTime()
    stopped = threading.Event()
    report = drain(service, stopped.set, 20, monotonic=clock.monotonic, sleep=clock.sleep)
    assert report.cut_short == 0 and report.seconds == 0 and report.shutdown_complete
    assert stopped.is_set() and service.draining.is_set()
    late = service.context("r-late", "Describe")  # a request after the drain: cancelled at once
    assert late.token.reason == SERVER_STOPPING
    assert service.metrics.draining._value.get() == 1
    with pytest.raises(ShuttingDownError, match="server shutting down"):
        service.admit()


def test_open_calls_are_waited_for_until_they_end(service: RouterService) -> None:
    clock = FakeTime()
    service.metrics.started("DoGet")
    bounded = service.context("r-bounded", "Stream")
    live = service.context("r-live", "Stream")
    service.endless.add(live)

    def sleep(seconds: float) -> None:
        # an open-ended stream is ended when the drain starts, at its next block
        assert live.token.reason == SERVER_STOPPING
        clock.sleep(seconds)
        if clock.now >= 103:  # the stream ends 3 s into the drain
            if service.metrics.calls_in_flight():
                service.metrics.ended("DoGet", "Stream", None, 3.0)
            # bounded streams are not stopped before the deadline
            assert not bounded.cancelled

    report = drain(service, lambda: None, 20, monotonic=clock.monotonic, sleep=sleep)
    assert report.cut_short == 0
    assert 3 <= report.seconds < 3.2


def test_the_deadline_cuts_streams_short(service: RouterService) -> None:
    clock = FakeTime()
    service.metrics.started("DoGet")
    service.metrics.started("GetFlightInfo")
    bounded = service.context("r-bounded", "Stream")
    report = drain(service, lambda: None, 5, monotonic=clock.monotonic, sleep=clock.sleep)
    assert report.cut_short == 2
    assert report.seconds == pytest.approx(5)
    assert bounded.token.reason == SERVER_STOPPING  # cut short at the deadline
    with pytest.raises(ShuttingDownError):
        bounded.check("Stream")


def test_a_hanging_server_shutdown_is_not_waited_for(service: RouterService) -> None:
    release = threading.Event()
    report = drain(service, lambda: release.wait(30) and None, 0, grace=0.2)
    release.set()
    assert not report.shutdown_complete
    assert report.seconds < 5  # bounded by the grace period, not by the hanging shutdown


def test_a_draining_router_is_not_ready(service: RouterService) -> None:
    import json

    from router.probes import health_pages

    readyz = health_pages(service.health, service.draining.is_set)["/readyz"]
    status, _, body = readyz()
    assert status.startswith("200") and json.loads(body)["ready"] is True
    service.begin_drain()
    status, _, body = readyz()
    document = json.loads(body)
    assert status.startswith("503") and document["ready"] is False and document["draining"]
