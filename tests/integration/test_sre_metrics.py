"""The metrics an SRE needs, scraped from a router that served real traffic: every family
present with its labels, the exposition clean for prometheus_client's parser and for
``promtool check metrics``, and the Grafana dashboard in deploy/ naming only metrics the
router exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.flight as flight
import pytest
from prometheus_client.parser import text_string_to_metric_families

from router.reload import Reloader
from router_backends.testing import serve_mock
from tests.integration.servers import running_router

pytestmark = pytest.mark.integration
arrakis = pytest.importorskip("arrakis")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "arrakis-router.json"
CHANNEL = "H1:GDS-CALIB_STRAIN"


@pytest.fixture(scope="module")
def exposition(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The text a router exposes after a Count, a fetch, a refused Describe, a good and a
    rejected reload."""
    folder = tmp_path_factory.mktemp("sre")
    with serve_mock() as down:
        yaml_text = f"{down}:\n  scopes: {{H1: [{{all: true}}]}}\n  retention: {{}}\n"
        with running_router(yaml_text) as (url, service, _):
            path = folder / "map.yaml"
            path.write_text(yaml_text)
            reloader = Reloader(service, path)
            assert reloader.reload("test")
            path.write_text("not a map")
            assert not reloader.reload("test")
            server = service.metrics.serve(0, "127.0.0.1")
            try:
                client = arrakis.Client(url)
                assert client.count("H1:GDS") >= 1
                client.fetch([CHANNEL], 1_400_000_000, 1_400_000_001)
                with pytest.raises(flight.FlightError):
                    client.describe(["H1:NOPE-X"])
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{server.port}/metrics", timeout=5
                ) as response:
                    yield response.read().decode()
            finally:
                server.close()


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


REQUIRED = {
    # family name (as the parser reports it) -> type, label names of its samples
    "arrakis_router_requests": ("counter", {"rpc", "kind", "outcome"}),
    "arrakis_router_rpc_duration_seconds": ("histogram", {"rpc", "kind", "le"}),
    "arrakis_router_in_flight_requests": ("gauge", {"rpc"}),
    "arrakis_router_open_streams": ("gauge", set()),
    "arrakis_router_stream_duration_seconds": ("histogram", {"stream", "le"}),
    "arrakis_router_stream_first_block_seconds": ("histogram", {"stream", "le"}),
    "arrakis_router_stream_blocks": ("counter", {"stream"}),
    "arrakis_router_stream_bytes": ("counter", {"stream"}),
    "arrakis_router_downstream_calls": ("counter", {"endpoint", "call", "outcome"}),
    "arrakis_router_downstream_call_duration_seconds": ("histogram", {"endpoint", "call", "le"}),
    "arrakis_router_downstream_in_flight": ("gauge", {"endpoint"}),
    "arrakis_router_reloads": ("counter", {"result"}),
    "arrakis_router_last_reload_success_timestamp_seconds": ("gauge", set()),
    "arrakis_router_scope_map_info": ("gauge", {"fingerprint", "endpoints"}),
    "arrakis_router_build_info": ("gauge", {"version", "python", "pyarrow", "output"}),
    "arrakis_router_draining": ("gauge", set()),
    "process_cpu_seconds": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "process_start_time_seconds": ("gauge", set()),
}


def test_every_sre_family_is_exported_with_its_labels(exposition: str) -> None:
    families = _families(exposition)
    for name, (kind, labels) in REQUIRED.items():
        assert name in families, f"{name} missing"
        family = families[name]
        assert family.type == kind, (name, family.type)
        assert family.samples, f"{name} has no samples"
        for sample in family.samples:
            if sample.name.endswith(("_sum", "_count", "_created")):
                assert set(sample.labels) == labels - {"le"}, (name, sample)
            else:
                assert set(sample.labels) == labels, (name, sample)


def test_values_after_the_traffic(exposition: str) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(exposition)
        for s in f.samples
    }

    def get(name: str, **labels: str) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    total = "arrakis_router_requests_total"
    assert get(total, rpc="DoGet", kind="Stream", outcome="OK") == 1
    # outcomes are gRPC status names
    outcomes = {dict(k[1]).get("outcome") for k in samples if k[0] == total}
    assert outcomes <= {"OK", "UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN"}, outcomes
    assert "UNAVAILABLE" in outcomes or "INTERNAL" in outcomes  # the refused Describe
    assert get("arrakis_router_reloads_total", result="success") == 1
    assert get("arrakis_router_reloads_total", result="failure") == 1
    assert get("arrakis_router_last_reload_success_timestamp_seconds") > 1.7e9
    assert get("arrakis_router_stream_blocks_total", stream="bounded") == 16
    assert get("arrakis_router_draining") == 0
    assert get("process_resident_memory_bytes") > 0


def test_promtool_finds_nothing_to_complain_about(exposition: str) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed (Debian: apt-get install prometheus; .ci/ops.sh)"
    res = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (res.stdout + res.stderr).strip(), res.stdout + res.stderr


_NAME = re.compile(r"\b(?:arrakis_router|process)_[a-zA-Z0-9_]+")


def _expressions(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def test_dashboard_names_only_metrics_the_router_exports(exposition: str) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = {s.name for f in text_string_to_metric_families(exposition) for s in f.samples}
    exprs = list(_expressions(dashboard))
    assert len(exprs) >= 10
    used: set[str] = set()
    for expr in exprs:
        names = set(_NAME.findall(expr))
        assert names, f"expression names no router metric: {expr}"
        unknown = names - exported
        assert not unknown, f"{sorted(unknown)} in {expr!r} are not exported"
        used |= names
    # the dashboard covers the families an SRE needs, not a token subset
    for family in (
        "rpc_duration_seconds",
        "stream_first_block_seconds",
        "stream_bytes",
        "downstream_call_duration_seconds",
        "downstream_in_flight",
        "reloads",
    ):
        assert any(family in name for name in used), family
    # the templating queries reference exported metrics too
    for var in dashboard["templating"]["list"]:
        for name in _NAME.findall(str(var.get("query", ""))):
            assert name in exported, name
