"""enforcement.csv: one row per flagged account with a suggested action and its evidence.

The rule (documented in docs/report.md, thresholds in `[report]` of the config):
- score >= suspend_min_score: suspend, unless the account came through a vetted
  verification path (education, research, startup, enterprise by default): those carry
  a claim that can be checked, so re-verify first;
- reverify_min_score <= score < suspend_min_score: re-verify;
- below: throttle (keep serving at a reduced rate while the evidence grows).
Suggestions only: a person decides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from distillguard.outputs.view import RunView

COLUMNS = ("account_id", "campaign_id", "suggested_action", "score", "verification_path",
           "evidence")
ACTIONS = ("suspend", "re-verify", "throttle")


def suggest(scores: np.ndarray, paths: list[str | None], cfg: dict) -> np.ndarray:
    """The suggested action per account, vectorised over score bands and verification paths."""
    vetted = np.isin(np.array([p or "" for p in paths], dtype=object),
                     list(cfg["vetted_paths"]))
    high = scores >= float(cfg["suspend_min_score"])
    mid = scores >= float(cfg["reverify_min_score"])
    return np.select([high & ~vetted, high | mid], ["suspend", "re-verify"], "throttle")


def enforcement_table(view: RunView) -> pa.Table:
    """The enforcement rows, strongest score first."""
    flagged = view.flagged_accounts()
    scores = flagged.column("score").to_numpy(zero_copy_only=False).astype(float)
    paths = flagged.column("verification_path").to_pylist()
    top = pc.list_slice(flagged.column("reasons"), 0, int(view.cfg["evidence_reasons"]))
    evidence = pc.fill_null(pc.binary_join(top, "; "), "")
    return pa.table({
        "account_id": flagged.column("account_id"),
        "campaign_id": flagged.column("campaign_id"),
        "suggested_action": pa.array(suggest(scores, paths, view.cfg), pa.string()),
        "score": pc.round(flagged.column("score"), 3),
        "verification_path": flagged.column("verification_path"),
        "evidence": evidence,
    })


def write_enforcement(table: pa.Table, path: Path) -> Path:
    """Write the table from `enforcement_table` (computed once: the report counts it too)."""
    pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="needed"))
    return path
