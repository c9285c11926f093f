"""Builds the router's native output stage (router/_chunkstream.pyx + _chunkstream.h).

Run by hatchling for every wheel and editable install (``[tool.hatch.build.targets.wheel.
hooks.custom]`` in pyproject.toml), and by ``make native`` after editing those files. It
compiles against the pyarrow installed in the build environment: pyarrow's C++ ABI changes
with every major version, so build with the pyarrow you run (``make venv`` and the image
pin both with constraints.txt); router/outstream.py refuses a module built for another
major version.

Needs Cython and a C++20 compiler (g++) with the Python headers. Without them the build
fails, saying what is missing; ``ARRAKIS_ROUTER_PURE=1`` builds a pure-Python package
instead, which serves through pyarrow's GeneratorStream (slower under many readers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script (make native)
    BuildHookInterface = object  # type: ignore[assignment,misc]

SOURCE = Path("router") / "_chunkstream.pyx"


def _fail(message: str) -> None:
    raise SystemExit(
        f"arrakis-router: cannot build the native output stage: {message}\n"
        "  (install g++ and the Python headers, e.g. Debian: apt-get install g++ python3-dev;"
        " or set ARRAKIS_ROUTER_PURE=1 for a pure-Python build)"
    )


def build(root: Path) -> Path:
    """Compile router/_chunkstream into ``root/router``; returns the module's path."""
    try:
        import numpy as np  # pyarrow's C++ headers include numpy's
        import pyarrow as pa
    except ImportError as exc:
        _fail(f"{exc.name} is not installed in the build environment")
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        _fail(f"no C++ compiler ({compiler!r} not found)")
    include = sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").exists():
        _fail(f"the Python headers are missing (no Python.h in {include})")
    major, minor = (int(part) for part in pa.__version__.split(".")[:2])
    libdir = Path(pa.get_library_dirs()[0])
    libs = [
        f"lib{name}.so.{major * 100 + minor}" for name in ("arrow", "arrow_python", "arrow_flight")
    ]
    missing = [lib for lib in libs if not (libdir / lib).exists()]
    if missing:
        _fail(f"pyarrow {pa.__version__} has no {', '.join(missing)} in {libdir}")
    target = root / "router" / ("_chunkstream" + sysconfig.get_config_var("EXT_SUFFIX"))
    building = target.with_name(target.name + ".building")
    with tempfile.TemporaryDirectory() as tmp:
        cpp = Path(tmp) / "_chunkstream.cpp"
        cython = [sys.executable, "-m", "cython", "--cplus", "-3", "--fast-fail"]
        _run([*cython, str(root / SOURCE), "-o", str(cpp)], "Cython")
        _run(
            [
                compiler,
                "-O2",
                "-std=c++20",
                "-fPIC",
                "-shared",
                "-fvisibility=hidden",
                f'-DROUTER_PYARROW_VERSION="{pa.__version__}"',
                f"-I{include}",
                f"-I{pa.get_include()}",
                f"-I{np.get_include()}",
                f"-I{root / 'router'}",
                str(cpp),
                f"-L{libdir}",
                *(f"-l:{lib}" for lib in libs),
                "-Wl,-rpath,$ORIGIN/../pyarrow",  # installed next to pyarrow
                "-o",
                str(building),
            ],
            compiler,
        )
    # a new file, not rewritten in place: a process may have the old one loaded
    os.replace(building, target)
    return target


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        _fail(f"{what} failed:\n{done.stdout}{done.stderr}"[-4000:])


class NativeBuildHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("ARRAKIS_ROUTER_PURE") == "1":
            return
        module = build(Path(self.root))
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        if version != "editable":  # an editable install imports it from the source tree
            build_data["force_include"][str(module)] = f"router/{module.name}"


if __name__ == "__main__":
    print(build(Path(__file__).resolve().parent))
