"""A small directory for the example ``npy`` backend: two channels, two GPS hours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NS = 1_000_000_000
#: the first hour file (GPS seconds, a multiple of 3600)
HOUR0 = 1_400_000_000 // 3600 * 3600
#: channel -> (rate, dtype, stride ns)
CHANNELS = {
    "X1:NPY-RAMP": (16, "float64", NS),
    "X1:NPY-COUNT": (64, "int32", 250_000_000),
}


def expected(name: str, start_ns: int, end_ns: int) -> np.ndarray:
    """The samples :func:`write_npy_dir` stored for ``name`` in ``[start, end)``."""
    rate, dtype, _ = CHANNELS[name]
    k = np.arange(start_ns * rate // NS, end_ns * rate // NS, dtype=np.int64)
    if name == "X1:NPY-RAMP":  # the GPS sample number: continuous across files
        return k.astype(np.float64)
    return (k % (3600 * rate)).astype(dtype)  # the index inside its hour file


def write_npy_dir(root: Path, hours: int = 2) -> Path:
    """``channels.json`` and one ``.npy`` file per channel and hour, from ``HOUR0``."""
    root.mkdir(parents=True, exist_ok=True)
    spec = {n: {"sample_rate": r, "stride": s} for n, (r, _, s) in CHANNELS.items()}
    (root / "channels.json").write_text(json.dumps(spec))
    for name in CHANNELS:
        (root / name).mkdir(exist_ok=True)
        for h in range(hours):
            start = (HOUR0 + 3600 * h) * NS
            np.save(
                root / name / f"{HOUR0 + 3600 * h}.npy", expected(name, start, start + 3600 * NS)
            )
    return root
