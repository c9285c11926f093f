"""Session-scoped upstream mocks (started once, always stopped)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.servers import CHANNELS, UpstreamMock


@pytest.fixture(scope="session")
def upstream_mocks() -> Iterator[tuple[str, str]]:
    """Two upstream arrakis-server mocks serving the same deterministic channels."""
    mocks = [UpstreamMock(CHANNELS), UpstreamMock(CHANNELS)]
    try:
        urls = (mocks[0].wait(), mocks[1].wait())
        yield urls
    finally:
        for m in mocks:
            m.stop()
