"""Through the router in front of our own mocks (router_backends), with strict retention:
the demo layout (live keeps 10 min, archive from 5 min back, overlapping)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from router.protocol.gps import gps_now_ns
from scopemap import StreamRequest, plan_stream
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")
testing = pytest.importorskip("router_backends.testing")
defaults = pytest.importorskip("router_backends.defaults")


def _channels() -> list[str]:
    picked: dict[str, str] = {}
    for meta in defaults.default_channels("H1"):
        sub = meta.name.split(":")[1][:3]
        if meta.sample_rate <= 256 and sub not in picked:
            picked[sub] = meta.name
    return sorted(picked.values())[:3]


@pytest.fixture(scope="module")
def mocks() -> Iterator[tuple[str, str, str]]:
    with (
        testing.serve_mock(retention=(0, 600)) as live,
        testing.serve_mock(retention=(300, math.inf)) as archive,
        testing.serve_mock() as full,
    ):
        yield live, archive, full


def test_fetch_across_overlapping_retention_equals_one_full_mock(
    mocks: tuple[str, str, str],
) -> None:
    live, archive, full = mocks
    yaml_text = f"""
{live}:
  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}
  retention: {{newest: 0, oldest: 600}}
{archive}:
  scopes: {{H1: [{{all: true}}], L1: [{{all: true}}]}}
  retention: {{newest: 300, oldest: .inf}}
"""
    channels = _channels()
    now = gps_now_ns() // 10**9
    start, end = now - 605.03, now - 295  # archive up to now-300, then live
    with running_router(yaml_text) as (url, service, _):
        request = StreamRequest(tuple(channels), int(start * 1e9), int(end * 1e9))
        assert len(plan_stream(service.routing.index, request, gps_now_ns()).slices) == 2
        got = arrakis.Client(url).fetch(channels, start, end)
        assert arrakis.Client(url).count("H1:.*") == arrakis.Client(full).count("H1:.*")
    want = arrakis.Client(full).fetch(channels, math.floor(start * 16) / 16, end)
    assert got.time_ns == want.time_ns
    for name in channels:
        a, b = got.data[name], want.data[name]
        assert not np.ma.is_masked(a), name
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)
