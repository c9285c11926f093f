"""The package build (hatch_build.py): the wheel carries the native data path compiled for
this pyarrow, and ARRAKIS_ROUTER_PURE=1 builds a pure-Python wheel without a compiler.
(The image build, make image-test, checks the native wheel inside the image.)"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _wheel(tmp_path: Path, **env: str) -> zipfile.ZipFile:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        env={**os.environ, **env},
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("arrakis_router-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.mark.parametrize("pure", [False, True], ids=["native", "pure"])
def test_the_wheel_has_the_native_module_unless_pure(tmp_path: Path, pure: bool) -> None:
    env = {"ARRAKIS_ROUTER_PURE": "1"} if pure else {}
    with _wheel(tmp_path, **env) as wheel:
        names = wheel.namelist()
        tags = wheel.read(next(n for n in names if n.endswith(".dist-info/WHEEL"))).decode()
    modules = [n for n in names if n.startswith("router/_chunkstream") and n.endswith(".so")]
    assert "router/outstream.py" in names and "router/_chunkstream.pyi" in names
    # the C++ and Cython sources are compiled in, not shipped
    assert not [n for n in names if n.endswith((".pyx", ".h"))]
    if pure:
        assert modules == [] and "Tag: py3-none-any" in tags
    else:
        python = f"cp{sys.version_info.major}{sys.version_info.minor}"
        assert len(modules) == 1 and "Root-Is-Purelib: false" in tags and python in tags
