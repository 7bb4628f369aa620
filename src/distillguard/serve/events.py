"""Posted JSON records -> contract rows, checked by the same SQL rules as file ingest.

Every value is passed on as text (numbers, booleans and lists in their JSON spelling), so
the contract typing in `ingest/validate.py` reads it exactly as it reads a CSV or JSON
Lines file: one set of rules, one set of error messages naming the field.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.contract import Table
from distillguard.engine.duckdb_engine import connect
from distillguard.ingest.staging import Raw
from distillguard.ingest.validate import typed_select

_local = threading.local()


@dataclass
class Checked:
    """One posted batch after the checks: the good rows and a status per record."""

    rows: pa.Table
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["status"] == "rejected"]


def _text(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _con() -> duckdb.DuckDBPyConnection:
    """A per-thread scratch connection: views are replaced per batch, nothing is kept."""
    if not hasattr(_local, "con"):
        _local.con = connect(memory_limit="512MB", threads=1)
    return _local.con


def check_records(records: list[Any], table: Table, max_prompt_bytes: int) -> Checked:
    """Type and check posted records of a contract table; bad ones get field and reason.

    One query over the batch applies the ingest's row rules (`typed_select`); a repeated
    key is caught by the store, not here.
    """
    statuses: list[dict[str, Any]] = []
    objects: list[int] = []
    key = table.key or table.names[0]
    columns: dict[str, list[str | None]] = {c: [] for c in table.names}
    for i, r in enumerate(records):
        bad = _unencodable(r) if isinstance(r, dict) and _has_surrogate(r) else None
        if isinstance(r, dict) and bad is None:
            objects.append(i)
            statuses.append({"index": i, key: _text(r.get(key)), "status": "accepted"})
            for c, values in columns.items():
                values.append(_text(r.get(c)))
        else:
            statuses.append({"index": i, key: None, "status": "rejected", "field": bad,
                             "error": "invalid UTF-8" if bad else "not a JSON object"})
    raw_rows = pa.table({"_row": pa.array(range(1, len(objects) + 1), pa.int64()),
                         **{c: pa.array(v, pa.string()) for c, v in columns.items()}})
    con = _con()
    con.register("_posted", raw_rows)
    raw = Raw("request", "_posted", {c: "VARCHAR" for c in table.names}, has_pre=False)
    typed = con.sql(typed_select(table, raw, 0, max_prompt_bytes)).to_arrow_table()
    con.unregister("_posted")
    reasons = typed.column("_reason")
    for row, column, reason in zip(typed.column("_row").to_pylist(),
                                   typed.column("_column").to_pylist(),
                                   reasons.to_pylist(), strict=True):
        if reason is not None:
            statuses[objects[row - 1]].update(status="rejected", field=column, error=reason)
    good = typed.filter(pc.is_null(reasons)).select(table.names)
    return Checked(good, statuses)


def _has_surrogate(record: dict[str, Any]) -> bool:
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unencodable(record: dict[str, Any]) -> str | None:
    """The first field whose text cannot be UTF-8 (a lone surrogate escaped in the JSON)."""
    for name, value in record.items():
        try:
            (_text(value) or "").encode("utf-8")
        except UnicodeEncodeError:
            return str(name)
    return None
