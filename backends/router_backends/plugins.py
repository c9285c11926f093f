"""Backend plugins: discovery through the entry-point group ``arrakis_router.backends``.

An entry point names an object (usually the backend class) with

* ``add_arguments(parser)`` -- declare the backend's own command-line options, and
* ``from_args(args) -> Backend`` -- build the backend from the parsed options;

the server core adds ``--url``, ``--retention``, ``--latency`` and ``--faults`` to every
backend.  A *command* plugin (such as ``record``) has ``run(args) -> int`` instead of
``from_args``.  Nothing is imported until a plugin is used, so one broken plugin never breaks
another; a plugin that fails to import or to start is reported naming the plugin and the
package it comes from.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol, runtime_checkable

from router_backends.interface import Backend

__all__ = [
    "GROUP",
    "BackendPlugin",
    "CommandPlugin",
    "PluginError",
    "PluginInfo",
    "discover",
    "load",
]

GROUP = "arrakis_router.backends"

#: our own plugins, as ``backends/pyproject.toml`` registers them; used when this package
#: runs from a source tree without its distribution's metadata (``PYTHONPATH``, as the
#: compose demo's mock image does), so that ``mock``, ``files`` and ``record`` still work
OWN = {
    "mock": "router_backends.mock:MockBackend",
    "files": "router_backends.files:FilesBackend",
    "record": "router_backends.record:RecordCommand",
}


@runtime_checkable
class BackendPlugin(Protocol):
    """What an entry point of the group names for a backend."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def from_args(self, args: argparse.Namespace) -> Backend: ...


@runtime_checkable
class CommandPlugin(Protocol):
    """What an entry point names for a command that is not a server (``record``)."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


class PluginError(Exception):
    """A plugin is missing, ambiguous, fails to import or to start."""


@dataclass(frozen=True)
class PluginInfo:
    """One installed entry point of the group (not imported)."""

    name: str
    value: str
    package: str
    version: str
    entry_point: EntryPoint

    @property
    def origin(self) -> str:
        return f"{self.package} {self.version}"

    def load(self) -> BackendPlugin | CommandPlugin:
        """Import the plugin; PluginError naming plugin and package on any failure."""
        try:
            obj: Any = self.entry_point.load()
        except Exception as exc:
            raise PluginError(
                f"backend plugin {self.name!r} from package {self.origin} failed to import "
                f"({self.value}): {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(getattr(obj, "add_arguments", None)) or not (
            callable(getattr(obj, "from_args", None)) or callable(getattr(obj, "run", None))
        ):
            raise PluginError(
                f"backend plugin {self.name!r} from package {self.origin}: {self.value} has no "
                "add_arguments(parser) and from_args(args) (or run(args))"
            )
        return obj  # type: ignore[no-any-return]


def discover() -> dict[str, list[PluginInfo]]:
    """Installed plugins by name (a name may come from several packages), sorted."""
    found: dict[str, list[PluginInfo]] = {}
    for ep in entry_points(group=GROUP):
        dist = ep.dist
        package = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        info = PluginInfo(ep.name, ep.value, package, version, ep)
        found.setdefault(ep.name, []).append(info)
    if not any(i.value == OWN.get(i.name) for infos in found.values() for i in infos):
        from router_backends import __version__

        for name, value in OWN.items():  # not installed: the source tree's own plugins
            ep = EntryPoint(name, value, GROUP)
            info = PluginInfo(name, value, "arrakis-router-backends (source)", __version__, ep)
            found.setdefault(name, []).append(info)
    return {name: found[name] for name in sorted(found)}


def find(name: str) -> PluginInfo:
    """The one installed plugin called ``name``; PluginError if none or several."""
    infos = discover().get(name, [])
    if not infos:
        installed = ", ".join(discover()) or "none"
        raise PluginError(f"no backend plugin {name!r} is installed (installed: {installed})")
    if len({i.value for i in infos}) > 1:
        raise PluginError(
            f"backend plugin {name!r} is registered by several packages: "
            + "; ".join(f"{i.origin} ({i.value})" for i in infos)
        )
    return infos[0]


def load(name: str) -> tuple[PluginInfo, BackendPlugin | CommandPlugin]:
    """Find and import the plugin ``name``."""
    info = find(name)
    return info, info.load()
