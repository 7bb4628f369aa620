"""Jinja2 environment and display filters shared by the HTML and Markdown outputs."""

from __future__ import annotations

from datetime import UTC
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from distillguard.outputs.explain import explain


def when(value: Any) -> str:
    """A timestamp as `YYYY-MM-DD HH:MM UTC` (naive values are taken as UTC)."""
    if value is None or value == "":
        return "unknown"
    ts = pd.Timestamp(value)
    ts = ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)
    return ts.strftime("%Y-%m-%d %H:%M UTC")


def num(value: Any) -> str:
    """Integers with thousands separators, other numbers to 3 significant digits."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{float(value):.3g}"


def md_code(value: Any) -> str:
    """Text safe inside a Markdown code span (no backticks, one line)."""
    return " ".join(str(value).replace("`", "'").split())


def jinja_env(autoescape: bool) -> jinja2.Environment:
    """The packaged templates folder with the shared filters; HTML autoescapes."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("distillguard.outputs", "templates"),
        autoescape=autoescape, trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )
    env.filters.update(when=when, num=num, md_code=md_code,
                       pct=lambda v: f"{float(v):.0%}")
    env.globals["explain"] = explain
    return env
