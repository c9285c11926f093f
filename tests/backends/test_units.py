"""Catalogue, signals, faults, retention: no servers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from router.protocol.channel import ChannelMeta
from router.protocol.errors import UnavailableError
from router_backends.catalog import Catalog, CatalogError, ChannelSpec, load_toml
from router_backends.defaults import default_channels
from router_backends.faults import FaultPlan, parse_faults
from router_backends.retention import Retention, parse_retention
from router_backends.signals import generate, samples_for

from .conftest import CHANNELS_TOML, GPS0, NS, STRIDE


def test_default_sets_are_realistic() -> None:
    for ifo in ("H1", "L1"):
        metas = default_channels(ifo)
        assert 500 < len(metas) < 900
        assert len({m.name for m in metas}) == len(metas)
        assert {m.publisher for m in metas} == {f"MOCK_{ifo}"}
        assert {m.stride for m in metas} == {STRIDE}
        assert {m.data_type for m in metas} == {"float32", "float64", "int32"}
        assert all(m.sample_rate * STRIDE % NS == 0 for m in metas)
        subsystems = Catalog(ChannelSpec.simple(m) for m in metas).scopes()[ifo]
        assert {"GDS", "LSC", "ASC", "PEM", "SUS"} <= set(subsystems)


def test_toml_common_func_and_changes() -> None:
    specs = {s.name: s for s in load_toml(CHANNELS_TOML)}
    ramp = specs["X1:TST-RAMP"]
    assert ramp.func == "t - 1400000000"
    assert ramp.versions[0] == ChannelMeta("X1:TST-RAMP", "float64", 256, STRIDE, NS, "TEST_X1")
    chg = specs["X1:CHG-RATE"]
    assert chg.meta_at((GPS0 + 100) * NS - 1).sample_rate == 256
    assert chg.meta_at((GPS0 + 100) * NS).sample_rate == 512
    assert chg.meta_at((GPS0 + 200) * NS).publisher == "OTHER"
    assert chg.next_change_after(GPS0 * NS) == (GPS0 + 100) * NS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["X1:A"]\ndata_type = "float32"\n', "sample_rate is required"),
        ('["NOCOLON"]\ndata_type = "float32"\nsample_rate = 16\n', "no ':'"),
        ('["X1:A"]\ndata_type = "complex64"\nsample_rate = 16\n', "unsupported data_type"),
        ('["X1:A"]\ndata_type = "float32"\nsample_rate = 100\nstride = 62500000\n', "whole number"),
        (
            '["X1:A"]\ndata_type = "float32"\nsample_rate = 16\n'
            'changes = [{time = 5, name = "x"}]\n',
            "cannot change name",
        ),
        ('["X1:A"\n', "Expected ']'"),
    ],
)
def test_toml_errors_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CatalogError, match=message) as info:
        load_toml(path)
    assert str(path) in str(info.value)


def test_samples_are_deterministic_and_grouping_invariant() -> None:
    metas = default_channels("H1")[:40]
    specs = [ChannelSpec.simple(m) for m in metas]
    times = [GPS0 * NS + i * STRIDE for i in range(4)]
    samples = {m.name: m.sample_rate * STRIDE // NS for m in metas}
    together = generate([(s, s.versions[0]) for s in specs], times, samples)
    for spec in specs:
        alone = samples_for(spec, spec.versions[0], times[1:3])
        n = samples[spec.name]
        np.testing.assert_array_equal(alone, together[spec.name][n : 3 * n])
    # a different time gives different values; same time, same values
    again = generate([(specs[0], specs[0].versions[0])], times, samples)[specs[0].name]
    np.testing.assert_array_equal(again, together[specs[0].name])
    strain = together["H1:GDS-CALIB_STRAIN"]
    assert strain.dtype == np.float64 and abs(strain.mean()) < 0.1 and 0.9 < strain.std() < 1.1
    ints = together["H1:GDS-CALIB_STATE_VECTOR"]
    assert ints.dtype == np.int32 and ints.min() >= -512 and ints.max() <= 511


def test_func_values() -> None:
    spec = ChannelSpec.simple(
        ChannelMeta("X1:A", "float64", 256, STRIDE), func="sin(2*pi*t) + t - 1400000000"
    )
    t0 = GPS0 * NS + 3 * STRIDE
    got = samples_for(spec, spec.versions[0], [t0])
    t = t0 / 1e9 + np.arange(16) / 256
    np.testing.assert_allclose(got, np.sin(2 * np.pi * t) + t - GPS0, rtol=0, atol=1e-6)
    const = ChannelSpec.simple(ChannelMeta("X1:B", "int32", 16, STRIDE), func="7")
    np.testing.assert_array_equal(samples_for(const, const.versions[0], [t0, t0 + STRIDE]), 7)


def test_parse_faults() -> None:
    plan = parse_faults(["drop=4,nulls=3", "delay=0.5/2,stall=2@10", "error=7", "exit=9"])
    assert plan == FaultPlan(4, 3, 0.5, 2, 2.0, 10, 7, 9)
    assert plan.drops(4) and plan.drops(8) and not plan.drops(0) and not plan.drops(5)
    assert plan.delay_for(2) == 0.5 and plan.delay_for(3) == 0
    assert parse_faults([]) == FaultPlan() and not FaultPlan().active
    for bad, msg in [
        ("drop", "NAME=VALUE"),
        ("drop=x", "not an integer"),
        ("drop=0", "at least 1"),
        ("stall=3", "SECONDS@BLOCKS"),
        ("boom=1", "unknown fault 'boom'"),
    ]:
        with pytest.raises(ValueError, match=msg):
            parse_faults([bad])


def test_retention() -> None:
    assert parse_retention("0,inf") == Retention(0, math.inf)
    assert parse_retention("600,3600") == Retention(600, 3600)
    with pytest.raises(ValueError, match="NEWEST,OLDEST"):
        parse_retention("600")
    with pytest.raises(ValueError, match="newest <= oldest"):
        parse_retention("600,10")
    now = 2_000_000_000 * NS
    archive = Retention(600, math.inf)
    archive.check_span(now - 10_000 * NS, now - 601 * NS, now, "stream")
    with pytest.raises(UnavailableError, match=r"newest 600 s, oldest inf s of age"):
        archive.check_span(now - 700 * NS, now - 500 * NS, now, "stream")
    with pytest.raises(UnavailableError, match="live"):
        archive.check_time(None, now, "Describe")
    live = Retention(0, 600)
    live.check_span(None, None, now, "stream")
    live.check_span(now - 600 * NS, now + 100 * NS, now, "stream")
    with pytest.raises(UnavailableError, match=r"\[1999999000000000000, open end\)"):
        live.check_span(now - 1000 * NS, None, now, "stream")
    assert live.to_json() == {"newest": 0, "oldest": 600}
    assert archive.to_json() == {"newest": 600, "oldest": "inf"}
