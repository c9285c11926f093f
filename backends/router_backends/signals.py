"""Deterministic samples: a pure function of (channel, metadata, sample time).

Channels without ``func`` get pseudo-random values read from a fixed pool of 2**21 values
per kind (approximately standard-normal floats: Irwin-Hall sums of the four 16-bit quarters
of a splitmix64 hash; integers -512..511 or 0..1023 from its top bits), built once from a
fixed seed.  Sample k (counted from GPS 0 at the channel's rate) of channel c is
``pool[(offset(c, rate, k // P) + k) % P]`` with P = 2**21: consecutive samples are
consecutive pool entries, so a block is a zero-copy slice of the pool, and the offset jumps
to a fresh hash every P samples, so the data never repeats with a fixed period.  No state,
no RNG objects: two processes, or a test, regenerate any span exactly and fast.

Channels with ``func`` evaluate the SymPy expression at ``t = T/1e9 + i/rate`` (GPS seconds,
float64; T = block start in ns, i = index in the block), as upstream's mock does.
"""

from __future__ import annotations

import functools
import itertools
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from router.protocol.channel import ChannelMeta
from router_backends.catalog import ChannelSpec

__all__ = ["POOL_SIZE", "compile_func", "generate", "noise", "noise_range", "pool", "samples_for"]

NS = 1_000_000_000
_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_RATE_MIX = 0xD1B54A32D192ED03
_MASK64 = (1 << 64) - 1
_IH_MEAN = 4 * 32767.5
_IH_SCALE = 1.0 / (65536.0 / np.sqrt(3.0))


def _mixed_key(spec: ChannelSpec, rate: int) -> int:
    return (spec.key ^ (rate * _RATE_MIX)) & _MASK64


def _splitmix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrapping arithmetic)."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def noise(keys: Sequence[int], indices: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Pseudo-random values, shape ``(len(keys), len(indices))``, of ``dtype``."""
    k = np.array(keys, dtype=np.uint64)[:, None]
    with np.errstate(over="ignore"):
        x: np.ndarray = np.add(k, np.multiply(indices[None, :], _GAMMA))
        _splitmix(x)
    if dtype.kind == "f":
        work = np.float32 if dtype.itemsize <= 4 else np.float64
        quarters = x.view(np.uint16).reshape(*x.shape, 4)
        s = quarters.sum(axis=-1, dtype=work)
        s -= work(_IH_MEAN)
        s *= work(_IH_SCALE)
        return np.asarray(s, dtype=dtype)
    top = np.right_shift(x, np.uint64(54)).astype(np.int64)
    if dtype.kind == "i":
        top -= 512
    return np.asarray(top, dtype=dtype)


@functools.lru_cache(maxsize=256)
def compile_func(expr: str) -> Callable[[np.ndarray], np.ndarray]:
    """A numpy function of ``t`` (float64 GPS seconds) from a SymPy expression."""
    import sympy  # type: ignore[import-untyped]  # slow: only when some channel has a func

    t = sympy.Symbol("t")
    try:
        parsed = sympy.sympify(expr, locals={"t": t})
    except (sympy.SympifyError, SyntaxError, TypeError) as exc:
        raise ValueError(f"invalid func {expr!r}: {exc}") from None
    extra = parsed.free_symbols - {t}
    if extra:
        raise ValueError(f"func {expr!r} uses unknown symbols {sorted(map(str, extra))}")
    fn = sympy.lambdify(t, parsed, "numpy")

    def evaluate(tv: np.ndarray) -> np.ndarray:
        out = np.asarray(fn(tv), dtype=np.float64)
        return np.broadcast_to(out, tv.shape) if out.shape != tv.shape else out

    return evaluate


def _func_values(
    expr: str, times_ns: Sequence[int], rate: int, n: int, dtype: np.dtype
) -> np.ndarray:
    base = np.array(times_ns, dtype=np.float64) / 1e9
    offs = np.arange(n, dtype=np.float64) / rate
    tv = (base[:, None] + offs[None, :]).ravel()
    with np.errstate(all="ignore"):
        return compile_func(expr)(tv).astype(dtype)


def samples_for(spec: ChannelSpec, meta: ChannelMeta, times_ns: Sequence[int]) -> np.ndarray:
    """The samples of one channel in blocks starting at ``times_ns`` (block duration = the
    metadata's stride), concatenated; ``meta`` is the metadata the blocks use."""
    assert meta.stride is not None
    n = meta.sample_rate * meta.stride // NS
    return generate([(spec, meta)], times_ns, {spec.name: n})[spec.name]


POOL_BITS = 21
POOL_SIZE = 1 << POOL_BITS
_POOL_SEED = 0x5EED_A77A_C15E_0001
_pools: dict[str, np.ndarray] = {}
_pool_lock = threading.Lock()


def pool(dtype: np.dtype) -> np.ndarray:
    """The shared pool of ``POOL_SIZE`` values of ``dtype`` (built once, read-only)."""
    key = dtype.str
    arr = _pools.get(key)
    if arr is None:
        with _pool_lock:
            arr = _pools.get(key)
            if arr is None:
                arr = noise([_POOL_SEED], np.arange(POOL_SIZE, dtype=np.uint64), dtype)[0]
                arr.setflags(write=False)
                _pools[key] = arr
    return arr


def _splitmix_int(x: int) -> int:
    """splitmix64 finaliser on one Python int (same result as :func:`_splitmix`)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@functools.lru_cache(maxsize=65536)
def _offset(key: int, epoch: int) -> int:
    return _splitmix_int((key ^ (epoch * 0xA24BAED4963EE407)) & _MASK64) & (POOL_SIZE - 1)


def noise_range(key: int, first: int, count: int, dtype: np.dtype) -> np.ndarray:
    """Samples ``first .. first+count-1`` of the noise channel with (mixed) ``key``; a
    read-only view of the pool when the span does not wrap."""
    src = pool(dtype)
    parts = []
    k = first
    end = first + count
    while k < end:
        epoch = k >> POOL_BITS
        stop = min(end, (epoch + 1) << POOL_BITS)
        a = (_offset(key, epoch) + k) & (POOL_SIZE - 1)
        n = stop - k
        if a + n <= POOL_SIZE:
            parts.append(src[a : a + n])
        else:
            parts.append(src[a:])
            parts.append(src[: a + n - POOL_SIZE])
        k = stop
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def generate(
    channels: Sequence[tuple[ChannelSpec, ChannelMeta]],
    times_ns: Sequence[int],
    samples: Mapping[str, int],
    dtypes: Mapping[str, np.dtype] | None = None,
) -> dict[str, np.ndarray]:
    """Samples of several channels for consecutive blocks starting at ``times_ns``.

    ``samples[name]`` is the sample count per block; each result has
    ``len(times_ns) * samples[name]`` values of ``dtypes[name]`` (default: the metadata's
    data type).  Noise channels sharing (rate, samples, dtype) are computed together.
    """
    out: dict[str, np.ndarray] = {}
    contiguous = all(b - a == times_ns[1] - times_ns[0] for a, b in itertools.pairwise(times_ns))
    for spec, meta in channels:
        dtype = np.dtype(dtypes[spec.name] if dtypes else meta.data_type)
        n = samples[spec.name]
        rate = meta.sample_rate
        if spec.func is not None:
            out[spec.name] = _func_values(spec.func, times_ns, rate, n, dtype)
            continue
        key = _mixed_key(spec, rate)
        if contiguous and len(times_ns) > 1 and (times_ns[1] - times_ns[0]) * rate == n * NS:
            out[spec.name] = noise_range(key, times_ns[0] * rate // NS, n * len(times_ns), dtype)
        else:
            out[spec.name] = (
                np.concatenate([noise_range(key, t * rate // NS, n, dtype) for t in times_ns])
                if times_ns
                else np.empty(0, dtype)
            )
    return out
