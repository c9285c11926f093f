"""Planning benchmark: stream-plan latency vs. scope-map size, and load + index time.

Synthetic maps, built to look like a large federation: endpoints spread over domains (250 per
domain), each claiming 3 of its domain's 100 subsystems, on three retention tiers (live
0..600 s, buffer 300 s..1 day, archive 1 h..inf), plus one wildcard archive per domain.
Requests ask for channels of one domain (more domains for 1000 channels) over
[now - 2000 s, now - 100 s), which crosses retention bounds, so plans have several slices.

Run: ``python bench/plan.py`` (``make bench``); prints a Markdown table.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scopemap import RoutingIndex, StreamRequest, load_text, plan_stream

S = 1_000_000_000
NOW = 1_400_000_000 * S + 123_456_789
SUBSYSTEMS = 100
PER_DOMAIN = 250
TIERS = ("{newest: 0, oldest: 600}", "{newest: 300, oldest: 86400}", "{newest: 3600, oldest: .inf}")


def domains_for(n: int) -> list[str]:
    return [f"D{k}" for k in range(max(1, n // PER_DOMAIN))]


def synthetic_map(n: int, seed: int = 1) -> str:
    rng = random.Random(seed)
    domains = domains_for(n)
    lines = []
    for d, domain in enumerate(domains):  # one wildcard archive per domain
        lines += [
            f"grpc://wild-{d}.example.org:31206:",
            "  scopes:",
            f"    {domain}: [{{all: true}}]",
            f"  retention: {TIERS[2]}",
        ]
    for i in range(n - len(domains)):
        domain = domains[i % len(domains)]
        subs = rng.sample(range(SUBSYSTEMS), 3)
        entries = ", ".join(f"{{subsystem: S{s}}}" for s in subs)
        lines += [
            f"grpc://ep-{i}.example.org:{30000 + i % 30000}:",
            "  scopes:",
            f"    {domain}: [{entries}]",
            f"  retention: {TIERS[i % 3]}",
        ]
    return "\n".join(lines) + "\n"


def channels(n_endpoints: int, count: int, spread: bool, seed: int = 2) -> tuple[str, ...]:
    """``spread``: each channel in a random subsystem (worst case: ~one group per channel);
    else clustered in 5 subsystems per domain, as a typical analysis request is."""
    rng = random.Random(seed)
    domains = domains_for(n_endpoints)
    used = domains[: max(1, count // 200)]
    pool = range(SUBSYSTEMS) if spread else range(5)
    return tuple(f"{rng.choice(used)}:S{rng.choice(pool)}-CHAN_{k}" for k in range(count))


def measure(index: RoutingIndex, request: StreamRequest, budget_s: float = 1.5) -> list[float]:
    samples: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(samples) < 20 or (time.perf_counter() < deadline and len(samples) < 500):
        t0 = time.perf_counter_ns()
        plan_stream(index, request, NOW)
        samples.append((time.perf_counter_ns() - t0) / 1e6)
    return samples


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def main() -> None:
    sizes = (10, 100, 1000, 10_000)
    counts = (1, 100, 1000)
    print("| endpoints | channels | request | slices | groups | plan median (ms) | plan p99 (ms) |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    load_figures = []
    for n in sizes:
        text = synthetic_map(n)
        t0 = time.perf_counter()
        result = load_text(text, f"synthetic-{n}.yaml")
        t1 = time.perf_counter()
        assert result.scope_map is not None, result.diagnostics[:3]
        index = RoutingIndex(result.scope_map)
        t2 = time.perf_counter()
        load_figures.append((n, len(text), t1 - t0, t2 - t1))
        for count in counts:
            for spread in (False, True):
                if count == 1 and spread:
                    continue
                chans = channels(n, count, spread)
                request = StreamRequest(chans, NOW - 2000 * S, NOW - 100 * S)
                samples = measure(index, request)
                p = plan_stream(index, request, NOW)
                groups = sum(len(s.groups) for s in p.slices)
                shape = "spread" if spread else "clustered"
                print(
                    f"| {n:,} | {count:,} | {shape} | {len(p.slices)} | {groups} | "
                    f"{statistics.median(samples):.3f} | {p99(samples):.3f} |",
                    flush=True,
                )
    print()
    print("| endpoints | YAML size | load + validate (s) | index (s) | total (s) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for n, size, load_s, index_s in load_figures:
        print(
            f"| {n:,} | {size / 1e6:.1f} MB | {load_s:.2f} | {index_s:.2f} | "
            f"{load_s + index_s:.2f} |"
        )


if __name__ == "__main__":
    main()
