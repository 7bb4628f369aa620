"""One TOML configuration: packaged documented defaults, overlaid by a user file.

Every threshold and weight lives in `default.toml` next to this module; a user file
(`--config my.toml`) only needs the keys it changes. Each key takes the type of its
default, checked on load, so a typo fails with the file and key, not mid-run.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from distillguard.errors import InputError


def _kind(value: Any) -> str:
    """The kind a key takes, read off its default: a float key takes whole numbers too."""
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list"


def _fits(default: Any, value: Any) -> bool:
    """Whether `value` has the type of `default`; a list's items that of its first item."""
    kind = _kind(default)
    if isinstance(value, bool) or kind == "true or false":
        return isinstance(value, bool) and kind == "true or false"
    if kind == "a number":
        return isinstance(value, (int, float))
    if kind == "a list":
        return isinstance(value, list) and (
            not default or all(_fits(default[0], item) for item in value))
    return _kind(value) == kind


def _expected(default: Any) -> str:
    if isinstance(default, list) and default:
        return f"a list of {_kind(default[0]).removeprefix('a ')}s"
    return _kind(default)


def _merge(base: dict[str, Any], over: dict[str, Any], path: str = "",
           file: str | None = None) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        where = f"{path}.{key}" if path else key
        if key not in out:
            raise InputError(f"unknown configuration key {where!r}", file=file)
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise InputError(f"configuration key {where!r} must be a table", file=file)
            out[key] = _merge(out[key], value, where, file)
        elif not _fits(out[key], value):
            raise InputError(f"configuration key {where!r} must be {_expected(out[key])} "
                             f"(default {out[key]!r}), not {value!r}", file=file)
        else:
            out[key] = value
    return out


def defaults() -> dict[str, Any]:
    """The packaged defaults (documented inline in default.toml)."""
    text = resources.files("distillguard").joinpath("default.toml").read_text("utf-8")
    return tomllib.loads(text)


def load(path: Path | None = None) -> dict[str, Any]:
    """Defaults overlaid with the user's file; unknown keys are an error, not a silent no-op."""
    cfg = defaults()
    if path is None:
        return cfg
    try:
        user = tomllib.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise InputError("configuration file not found", file=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"invalid TOML: {exc}", file=str(path)) from exc
    return _merge(cfg, user, file=str(path))
