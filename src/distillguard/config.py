"""One TOML configuration: packaged documented defaults, overlaid by a user file.

Every threshold and weight lives in `default.toml` next to this module; a user file
(`--config my.toml`) only needs the keys it changes.
"""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from distillguard.errors import InputError


def _merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        where = f"{path}.{key}" if path else key
        if key not in out:
            raise InputError(f"unknown configuration key {where!r}")
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise InputError(f"configuration key {where!r} must be a table")
            out[key] = _merge(out[key], value, where)
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
    return _merge(cfg, user)
