"""Reads a detection run directory (the output of `distillguard detect --out DIR`).

The small JSON files are loaded whole; the Parquet tables are queried through DuckDB
views, so a run with millions of accounts or edges is read column by column, per
campaign, never as Python rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from distillguard.contract import ACCOUNTS_OUT_COLUMNS, CAMPAIGN_KEYS
from distillguard.errors import InputError

REQUIRED_FILES = ("accounts.parquet", "campaigns.json", "run.json")
# Optional tables and the columns the outputs read from each (others are ignored).
OPTIONAL_TABLES: dict[str, tuple[str, ...]] = {
    "account_features": ("account_id", "n_exchanges", "exchanges_per_active_day", "flagged",
                         "campaign_id"),
    "edges": ("src", "dst", "weight", "kinds"),
    "timeline": ("campaign_id", "hour", "model", "n"),
    "templates": ("campaign_id", "template_id", "n_exchanges", "n_accounts", "example"),
    "releases": ("model", "released_at"),
}
# Columns read when present (the engine may or may not carry them).
EXTRA_COLUMNS: dict[str, tuple[str, ...]] = {"account_features": ("verification_path",)}


@dataclass
class RunDir:
    """A run directory opened for reading: JSON documents plus DuckDB views of its tables."""

    path: Path
    run: dict[str, Any]
    campaigns: list[dict[str, Any]]
    db: duckdb.DuckDBPyConnection
    tables: set[str] = field(default_factory=set)
    columns: dict[str, list[str]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def has(self, table: str) -> bool:
        return table in self.tables

    def query(self, sql: str, params: list[Any] | None = None) -> duckdb.DuckDBPyRelation:
        return self.db.execute(sql, params or [])


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc.msg}", file=str(path), row=exc.lineno) from exc


def _columns(db: duckdb.DuckDBPyConnection, path: Path) -> set[str]:
    try:
        rows = db.execute("SELECT name FROM parquet_schema(?)", [str(path)]).fetchall()
    except duckdb.Error as exc:
        raise InputError(f"unreadable Parquet: {exc}", file=str(path)) from exc
    return {r[0] for r in rows}


def _check_campaigns(campaigns: Any, path: Path) -> list[dict[str, Any]]:
    if not isinstance(campaigns, list):
        raise InputError("expected a JSON array of campaigns", file=str(path))
    for i, c in enumerate(campaigns):
        if not isinstance(c, dict):
            raise InputError("a campaign must be a JSON object", file=str(path), row=i)
        lacking = [k for k in CAMPAIGN_KEYS if k not in c]
        if lacking:
            raise InputError(f"campaign lacks {', '.join(lacking)}", file=str(path), row=i)
    return campaigns


def open_run(path: Path) -> RunDir:
    """Open RUN_DIR, checking the required files and columns; note optional tables absent."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("run directory not found", file=str(path))
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise InputError(f"not a detection run directory: {name} is missing", file=str(path))
    run = _read_json(path / "run.json")
    if not isinstance(run, dict):
        raise InputError("expected a JSON object", file=str(path / "run.json"))
    campaigns = _check_campaigns(_read_json(path / "campaigns.json"), path / "campaigns.json")
    db = duckdb.connect()
    db.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC whatever the host's zone
    out = RunDir(path=path, run=run, campaigns=campaigns, db=db)
    tables = {"accounts": ACCOUNTS_OUT_COLUMNS, **OPTIONAL_TABLES}
    for table, needed in tables.items():
        file = path / f"{table}.parquet"
        if not file.is_file():
            if table == "accounts":
                raise InputError("missing", file=str(file))
            out.missing[table] = f"{file.name} not in the run directory"
            continue
        present = _columns(db, file)
        lacking = [c for c in needed if c not in present]
        if lacking:
            raise InputError(f"lacks column(s) {', '.join(lacking)}", file=str(file))
        extra = [c for c in EXTRA_COLUMNS.get(table, ()) if c in present]
        cols = ", ".join(f'"{c}"' for c in (*needed, *extra))
        db.execute(f"CREATE VIEW {table} AS SELECT {cols} FROM read_parquet('{_sql_str(file)}')")
        out.tables.add(table)
        out.columns[table] = [*needed, *extra]
    return out


def _sql_str(path: Path) -> str:
    return str(path).replace("'", "''")
