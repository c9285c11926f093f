"""Fixtures: mock servers bound to port 0, always stopped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from router_backends.testing import serve_mock

CHANNELS_TOML = Path(__file__).with_name("channels.toml")
GPS0 = 1_400_000_000
NS = 1_000_000_000
STRIDE = 62_500_000


@pytest.fixture(scope="module")
def default_url() -> Iterator[str]:
    """The default H1/L1 channel sets."""
    with serve_mock() as url:
        yield url


@pytest.fixture(scope="module")
def toml_url() -> Iterator[str]:
    """The channels of ``channels.toml``."""
    with serve_mock(CHANNELS_TOML) as url:
        yield url
