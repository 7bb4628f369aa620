"""Provenance results filed with a run: `RUN_DIR/provenance/<campaign_id>.json`.

`distillguard provenance test|read --out` writes these files (format in
docs/provenance.md); the report shows each beside its campaign. They are optional and
written by hand after detection, so a bad one must not sink the whole report: it is
skipped with a warning that names the file. Only the keys the report shows are checked,
and torch-free: importing `distillguard.provenance` here would not be.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SUBDIR = "provenance"
MODES = ("generation", "reading")
VERDICTS = ("learned", "not_detected", "insufficient", "uncalibrated")
_NUMBER = (int, float)
# key -> accepted types (None allowed only where listed)
_FIELDS: dict[str, tuple[type, ...]] = {
    "key_id": (str,), "mode": (str,), "tokens_scored": (int,), "green_fraction": _NUMBER,
    "gamma": _NUMBER, "z": _NUMBER, "p_value": _NUMBER, "log10_p_value": (*_NUMBER, type(None)),
    "verdict": (str,), "verdict_text": (str,), "calibration": (dict,),
}
_CALIBRATION: dict[str, tuple[type, ...]] = {
    "mean": _NUMBER, "sd": _NUMBER, "n_keys": (int,), "ok": (bool,),
}


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _problem(doc: Any, campaign_id: str) -> str | None:
    """Why `doc` cannot be shown for `campaign_id`, or None when it can."""
    if not isinstance(doc, dict):
        return "expected a JSON object"
    bad = [k for k, t in _FIELDS.items() if not _typed(doc.get(k), t)]
    if not bad:
        bad = [f"calibration.{k}" for k, t in _CALIBRATION.items()
               if not _typed(doc["calibration"].get(k), t)]
    if bad:
        return f"missing or invalid {', '.join(bad)}"
    if doc["mode"] not in MODES:
        return f"unknown mode {doc['mode']!r}"
    if doc["verdict"] not in VERDICTS:
        return f"unknown verdict {doc['verdict']!r}"
    if doc.get("campaign_id") not in (None, campaign_id):
        return f"filed under {campaign_id} but its campaign_id is {doc['campaign_id']!r}"
    return None


def p_text(p: float, log10_p: float | None) -> str:
    """The p-value as printed: 2 significant digits, or its log10 once it underflowed."""
    if p > 0:
        return f"{p:.2g}"
    if log10_p is not None:
        return f"10^{log10_p:.1f}"
    return "< 1e-308 (underflow)"


def load_provenance(run_path: Path, campaign_ids: list[str]
                    ) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Results by campaign id, and one warning per file that could not be used."""
    folder = run_path / SUBDIR
    if not folder.is_dir():
        return {}, []
    known = set(campaign_ids)
    results: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    for path in sorted(folder.glob("*.json")):
        name = f"{SUBDIR}/{path.name}"
        if path.stem not in known:
            warnings.append(f"{name}: no campaign {path.stem!r} in this run; not shown")
            continue
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            warnings.append(f"{name}: unreadable ({exc}); not shown")
            continue
        problem = _problem(doc, path.stem)
        if problem:
            warnings.append(f"{name}: {problem}; not shown")
            continue
        results[path.stem] = {**doc, "p_text": p_text(doc["p_value"], doc["log10_p_value"])}
    return results, warnings
