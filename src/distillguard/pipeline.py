"""The whole batch job behind `distillguard detect`: ingest, detect, write the run directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from distillguard import detect
from distillguard.engine.duckdb_engine import connect
from distillguard.engine.session import DuckDBSession
from distillguard.ingest import load_configured, write_quarantine
from distillguard.outputs import run_dir


def run_detection(exchanges: list[Path], out: Path, cfg: dict[str, Any], *,
                  accounts: list[Path] | None = None, releases: list[Path] | None = None,
                  fmt: str = "contract", account_attribute: str | None = None,
                  dsn: str | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Detect over input files (contract or a provider log format) and write `out`."""
    con = connect(memory_limit=cfg["engine"]["memory_limit"])
    progress("validating inputs")
    ingest = load_configured(con, cfg, exchanges=exchanges, accounts=accounts,
                             releases=releases, fmt=fmt, account_attribute=account_attribute,
                             dsn=dsn)
    result = detect_and_write(DuckDBSession(con), ingest, exchanges, out, cfg,
                              accounts=accounts, releases=releases, engine="duckdb",
                              progress=progress)
    write_quarantine(con, out / "quarantine.parquet")
    return result


def detect_and_write(session: Any, ingest: Any, exchanges: list[Any], out: Path,
                     cfg: dict[str, Any], *, accounts: list[Any] | None,
                     releases: list[Any] | None, engine: str,
                     progress: Callable[[str], None]) -> dict[str, Any]:
    """The engine-independent part of a run: detect over the session's validated views,
    write the run directory, return counts for the summary. (The quarantine file is the
    engine's to write.)"""
    det = detect.run(session, ingest, cfg, progress)
    progress("writing outputs")
    run_dir.finalize(session, det, cfg)
    inputs = {"exchanges": [str(p) for p in exchanges],
              "accounts": [str(p) for p in accounts or []],
              "releases": [str(p) for p in releases or []]}
    paths = run_dir.write(out, det, ingest, inputs, cfg, engine=engine)
    return {"paths": paths, "campaigns": det.campaigns, "ingest": ingest,
            "flagged": int(det.accounts["flagged"].sum()), "accounts": len(det.accounts),
            "skipped": det.plan.skipped, "permitted": det.permitted,
            "organisations": det.organisations}
