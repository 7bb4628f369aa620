"""The embedded default engine: one in-process DuckDB connection, configured once.

Everything is UTC; memory is capped so large runs spill to disk instead of growing RSS.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb


def spill_directory() -> Path:
    """Where DuckDB writes what exceeds its memory limit (under TMPDIR)."""
    return Path(tempfile.gettempdir()) / "distillguard-spill"


def connect(database: Path | str = ":memory:", *, memory_limit: str = "6GB",
            threads: int | None = None, temp_dir: Path | None = None) -> duckdb.DuckDBPyConnection:
    """Open a DuckDB connection with the settings every distillguard step assumes."""
    con = duckdb.connect(str(database))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(f"SET temp_directory = '{temp_dir or spill_directory()}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con
