"""Session-scoped upstream mocks (started once, always stopped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import CHANNELS, upstream_mock


@pytest.fixture(scope="session")
def upstream_mocks() -> Iterator[tuple[str, str]]:
    """Two upstream arrakis-server mocks serving the same deterministic channels."""
    with upstream_mock(CHANNELS) as first, upstream_mock(CHANNELS) as second:
        yield first.url, second.url
