"""Layered settings of a sub-command: flag > environment > TOML file > default.

Built over the argparse options themselves, so every option added to ``router serve`` is
covered without a second list:

- :func:`layered` (called last in ``configure``) turns each option's default into a
  :class:`Unset` marker and makes required options optional at parse time, so that after
  parsing a value that is not ``Unset`` came from the command line;
- :func:`resolve` fills every ``Unset`` from ``ARRAKIS_ROUTER_<OPTION>`` (the option's long
  name in upper case, ``-`` as ``_``), then from the TOML file (``--config``; keys are option
  names without the leading dashes, ``scope-map`` or ``scope_map``), then the default, checks
  the value with the option's own ``type`` and ``choices``, and records where each came from.
  A flag (``store_true``/``store_false``) set to true in either place acts as if given on the
  command line.

A bad value anywhere raises :class:`ConfigError` naming the source, the option and the value.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_PREFIX",
    "ConfigError",
    "Resolved",
    "Unset",
    "env_name",
    "layered",
    "render",
    "resolve",
]

ENV_PREFIX = "ARRAKIS_ROUTER_"
# options about the configuration itself: never read from the file
_META = ("config", "print_config")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class ConfigError(ValueError):
    """A setting that cannot be used; the text names source, option and value."""


@dataclass(frozen=True)
class Unset:
    """The parse-time default of a layered option: "not on the command line"."""

    default: Any
    required: bool = False

    def __repr__(self) -> str:
        return f"Unset({self.default!r})"


@dataclass(frozen=True)
class Resolved:
    """The effective values (``args``) and where each came from (``origins[dest]``:
    ``flag``, ``env NAME``, ``file PATH`` or ``default``)."""

    args: argparse.Namespace
    origins: dict[str, str]
    options: dict[str, argparse.Action]
    missing: tuple[str, ...]
    #: ``ARRAKIS_ROUTER_*`` variables that name no option (typos: warned about at start)
    unknown_env: tuple[str, ...] = ()


def env_name(option: str) -> str:
    """``ARRAKIS_ROUTER_<OPTION>``: the option's long name (or dest) in upper case, ``-`` as
    ``_`` (``--scope-map`` -> ``ARRAKIS_ROUTER_SCOPE_MAP``, ``--no-cache`` -> ``..._NO_CACHE``)."""
    return ENV_PREFIX + option.lstrip("-").replace("-", "_").upper()


def _option_name(action: argparse.Action) -> str:
    longs = [s for s in action.option_strings if s.startswith("--")]
    return (longs[0] if longs else action.option_strings[0]).lstrip("-")


def _layerable(action: argparse.Action) -> bool:
    return bool(action.option_strings) and action.dest not in ("help", "version", *_META)


def layered(parser: argparse.ArgumentParser) -> None:
    """Make every option of ``parser`` layered (see the module text). Call it after the last
    ``add_argument``."""
    for action in parser._actions:
        if not _layerable(action) or isinstance(action.default, Unset):
            continue
        action.default = Unset(action.default, action.required)
        if action.help != argparse.SUPPRESS:
            required = "required; " if action.required else ""
            env = env_name(_option_name(action))
            action.help = f"{action.help or ''} [{required}env {env}]".lstrip()
        action.required = False


def _is_flag(action: argparse.Action) -> bool:
    return action.nargs == 0 and isinstance(action.const, bool)


def _is_list(action: argparse.Action) -> bool:
    return isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+")


def _convert(action: argparse.Action, raw: Any, source: str) -> Any:
    """``raw`` (a string from the environment or a TOML value) as the option's value."""
    name = f"--{_option_name(action)}"

    def bad(problem: str) -> ConfigError:
        shown = repr(raw) if len(repr(raw)) <= 80 else repr(raw)[:77] + "..."
        return ConfigError(f"{source}: {name}: {shown}: {problem}")

    if _is_flag(action):
        if isinstance(raw, bool):
            return raw if action.const else not raw
        if isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            on = raw.strip().lower() in _TRUE
            return action.const if on else not action.const
        raise bad("expected true or false")
    if _is_list(action):
        if isinstance(raw, str):
            items: list[Any] = [p.strip() for p in raw.split(",") if p.strip()]
        elif isinstance(raw, list):
            items = raw
        else:
            raise bad("expected a list (comma separated in the environment)")
        return [_scalar(action, item, bad) for item in items]
    return _scalar(action, raw, bad)


def _scalar(action: argparse.Action, raw: Any, bad: Any) -> Any:
    if isinstance(raw, bool | dict | list):
        raise bad("expected a single value")
    convert: Any = action.type if callable(action.type) else str
    try:
        value = convert(raw if isinstance(raw, str) else str(raw))
    except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
        raise bad(f"not a valid {getattr(convert, '__name__', 'value')} ({exc})") from None
    if action.choices is not None and value not in action.choices:
        raise bad(f"must be one of {', '.join(map(str, action.choices))}")
    return value


def _read_file(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid TOML: {exc}") from None
    return doc


def resolve(
    args: argparse.Namespace,
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
) -> Resolved:
    """Fill every option of ``args`` still :class:`Unset` (see the module text)."""
    environ = os.environ if environ is None else environ
    options = {a.dest: a for a in parser._actions if _layerable(a)}
    config_path = getattr(args, "config", None) or environ.get(env_name("config")) or None
    file_values: dict[str, tuple[str, Any]] = {}
    if config_path:
        by_name = {}
        for dest, action in options.items():
            by_name[_option_name(action)] = dest
            by_name[_option_name(action).replace("-", "_")] = dest
        for key, value in _read_file(config_path).items():
            if key not in by_name:
                known = ", ".join(sorted(_option_name(a) for a in options.values()))
                raise ConfigError(
                    f"--config {config_path}: unknown setting {key!r} (known: {known})"
                )
            file_values[by_name[key]] = (key, value)
    out = argparse.Namespace(**vars(args))
    origins: dict[str, str] = {}
    missing: list[str] = []
    for dest, action in options.items():
        current = getattr(args, dest, None)
        if not isinstance(current, Unset):
            origins[dest] = "flag"
            continue
        name = env_name(_option_name(action))
        if name in environ:
            value = _convert(action, environ[name], f"environment {name}")
            origins[dest] = f"env {name}"
        elif dest in file_values:
            key, raw = file_values[dest]
            value = _convert(action, raw, f"--config {config_path} [{key}]")
            origins[dest] = f"file {config_path}"
        else:
            value = current.default
            origins[dest] = "default"
            if current.required:
                missing.append(f"--{_option_name(action)}")
        setattr(out, dest, value)
    if config_path:
        out.config = config_path
    variables = {env_name(_option_name(a)) for a in options.values()}
    variables |= {env_name(meta) for meta in _META}
    unknown = sorted(k for k in environ if k.startswith(ENV_PREFIX) and k not in variables)
    return Resolved(out, origins, options, tuple(missing), tuple(unknown))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string


def render(resolved: Resolved) -> str:
    """The effective settings as a TOML document usable as ``--config``, each line with its
    source; unset options as comments."""
    lines = ["# router serve: effective settings (flag > environment > file > default)"]
    for dest, action in resolved.options.items():
        name = _option_name(action)
        value = getattr(resolved.args, dest)
        origin = resolved.origins[dest]
        if value is None:
            note = "required, not set" if f"--{name}" in resolved.missing else "unset"
            lines.append(f"# {name} = ({note})  # {origin}; env {env_name(name)}")
        else:
            lines.append(f"{name} = {_toml_value(value)}  # {origin}")
    return "\n".join(lines) + "\n"
