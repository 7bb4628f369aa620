"""Shared test helpers: write contract files in every input format, load them, run the CLI.

Helpers are plain functions (import them: `from conftest import write_rows`); fixtures
are the few things that need pytest's machinery. Append new shared helpers here, grouped
under a comment naming the area that uses them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import Result
from typer.testing import CliRunner

from distillguard.engine.duckdb_engine import connect
from distillguard.ingest import IngestReport, load_inputs

# --- the project's public prompt test set (tests using it skip when it is absent) -------------

SHARED_PROMPTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "prompts"

# --- input files in every format ------------------------------------------------------------

FORMATS = ("parquet", "jsonl", "jsonl.gz", "csv")


def exchange_row(i: int, **over: Any) -> dict[str, Any]:
    """A valid exchanges record (string-typed, as JSON Lines and CSV carry it)."""
    row: dict[str, Any] = {"exchange_id": f"e{i}", "ts": "2026-03-01T12:00:00Z",
                           "account_id": f"acct{i % 3}", "prompt": f"prompt number {i}"}
    row.update(over)
    return row


def _columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Union of the records' keys, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r))


def _jsonl_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in rows)


def _csv_bytes(rows: Sequence[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=_columns(rows), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in row.items()})
    return buf.getvalue().encode()


def _parquet_column(values: list[Any]) -> pa.Array:
    if all(v is None or isinstance(v, list) for v in values):
        return pa.array(values, pa.list_(pa.string()))
    return pa.array([None if v is None else json.dumps(v) if isinstance(v, list) else str(v)
                     for v in values], pa.string())


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """Write records in the format the suffix names (.parquet, .jsonl, .jsonl.gz, .csv).

    Parquet gets one string column per key (a list<string> column where every value is
    a list; lists as JSON text where values are mixed), so the same records test the same
    rules in every format; use `write_parquet` for natively typed columns.
    """
    name = path.name
    if name.endswith(".parquet"):
        data = {c: [r.get(c) for r in rows] for c in _columns(rows)}
        pq.write_table(pa.table({c: _parquet_column(vals) for c, vals in data.items()}), path)
    elif name.endswith(".jsonl.gz"):
        path.write_bytes(gzip.compress(_jsonl_bytes(rows)))
    elif name.endswith(".jsonl"):
        path.write_bytes(_jsonl_bytes(rows))
    elif name.endswith(".csv"):
        path.write_bytes(_csv_bytes(rows))
    else:
        raise ValueError(f"no writer for {path}")
    return path


def write_parquet(path: Path, columns: dict[str, pa.Array | list[Any]]) -> Path:
    """A Parquet file from column arrays (natively typed when given as Arrow arrays)."""
    pq.write_table(pa.table(columns), path)
    return path


# --- loading ---------------------------------------------------------------------------------


def load(exchanges: Sequence[Path] | None = None, **kwargs: Any,
         ) -> tuple[duckdb.DuckDBPyConnection, IngestReport]:
    """Run the ingest into a fresh in-memory connection."""
    con = connect()
    report = load_inputs(con, exchanges=list(exchanges) if exchanges else None, **kwargs)
    return con, report


def quarantined(con: duckdb.DuckDBPyConnection,
                table: str = "exchanges") -> list[tuple[str, int, str, str]]:
    """(file name, row, column, reason) of one table's quarantined rows, in file/row order."""
    rows = con.execute('SELECT file, "row", "column", reason FROM quarantine '
                       'WHERE "table" = ? ORDER BY file, "row"', [table]).fetchall()
    return [(Path(f).name, r, c, reason) for f, r, c, reason in rows]


def column(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    """The first column of a query's rows."""
    return [r[0] for r in con.execute(sql).fetchall()]


# --- CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Invoke the `distillguard` CLI in-process; stdout and stderr are kept apart."""
    from distillguard.cli import app  # here, so a broken command fails only CLI tests

    runner = CliRunner()

    def invoke(*args: str | Path) -> Result:
        return runner.invoke(app, [str(a) for a in args])

    return invoke
