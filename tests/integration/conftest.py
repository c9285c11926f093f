"""Session-scoped upstream mocks (started once, always stopped); a throw-away TLS certificate."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import CHANNELS, upstream_mock


@pytest.fixture(scope="session")
def upstream_mocks() -> Iterator[tuple[str, str]]:
    """Two upstream arrakis-server mocks serving the same deterministic channels."""
    with upstream_mock(CHANNELS) as first, upstream_mock(CHANNELS) as second:
        yield first.url, second.url


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throw-away self-signed certificate for localhost / 127.0.0.1: (cert, key)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    command = "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    names = "subjectAltName=DNS:localhost,IP:127.0.0.1"
    subprocess.run(
        [
            "openssl",
            *command.split(),
            "-subj",
            "/CN=localhost",
            "-addext",
            names,
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key
