"""DescribeCache generations: a reload's clear() drops the answers of Describes in flight."""

from __future__ import annotations

from router.metadata import DescribeCache
from router.protocol.channel import ChannelMeta

OLD = ChannelMeta("X1:A", "float32", 256, 62_500_000)


def cache() -> DescribeCache:
    return DescribeCache(ttl=60.0, timer=lambda: 0.0)  # the TTL never runs out


def test_a_store_of_the_current_generation_is_served() -> None:
    c = cache()
    c.store([OLD], None, None, generation=c.generation)
    assert c.lookup(["X1:A"], None, None) == ({"X1:A": OLD}, [])


def test_a_describe_running_across_a_reload_does_not_repopulate_the_cache() -> None:
    c = cache()
    started = c.generation  # the Describe reads the generation, then the (old) map
    c.clear()  # the reload lands while its downstream call runs
    c.store([OLD], None, None, generation=started)  # its answer, about the old map
    assert c.lookup(["X1:A"], None, None) == ({}, ["X1:A"])
    assert c.stale_stores == 1
    # a Describe started after the reload stores as usual
    c.store([OLD], None, None, generation=c.generation)
    assert c.lookup(["X1:A"], None, None) == ({"X1:A": OLD}, [])


def test_every_clear_is_a_new_generation() -> None:
    c = cache()
    first = c.generation
    c.clear()
    second = c.generation
    c.clear()
    assert first < second < c.generation
    c.store([OLD], None, None, generation=second)
    assert c.lookup(["X1:A"], None, None)[1] == ["X1:A"]
    assert "generation=2" in repr(c)
