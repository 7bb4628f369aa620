"""Posted JSON records -> contract rows, checked by the same rules as file ingest.

The rules are the SQL of `ingest/validate.py` (one set of rules, one set of error
messages naming the field). Running that SQL costs a DuckDB query per batch, so records
go through a pure-Python fast path first that only *accepts*: it takes a record when
its values are of the plain JSON shape that the SQL rules surely accept (an ISO-8601 or
epoch-millisecond time, an int64, a bool, a list of strings, an IP the same regular
expressions match, a prompt within the size limit) and types them as the SQL would.
Every other record — a bad one, or one the fast path is not sure about (a number sent
as text, a time in another spelling) — is checked by the SQL rules exactly as before,
so the answer for it is the SQL's. `tests/test_serve.py` compares both paths.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain, repeat
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.contract import Kind, Table
from distillguard.engine.duckdb_engine import connect
from distillguard.ingest.staging import Raw
from distillguard.ingest.validate import IP_COLUMNS, IPV4_RE, IPV6_RE, typed_select

_local = threading.local()

ARROW_TYPE = {Kind.STRING: pa.string(), Kind.TIMESTAMP: pa.timestamp("us"),
              Kind.INT: pa.int64(), Kind.BOOL: pa.bool_(),
              Kind.STRING_LIST: pa.list_(pa.string())}
_EPOCH = datetime(1970, 1, 1)
# Epoch milliseconds the fast path types itself (years 1970-9999); others go to the SQL.
_MAX_EPOCH_MS = 253_402_300_799_999
# ISO-8601 spellings DuckDB's TIMESTAMPTZ cast and `datetime.fromisoformat` read alike.
_ISO = (r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
        r"(?:[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?(?:Z|[+-][0-9]{2}:[0-9]{2})?)?")
_ISO_TS = re.compile(_ISO)
# A whole column joined by newlines, in one regular-expression call.
_ISO_LINES = re.compile(f"{_ISO}(?:\n{_ISO})*")
_IP = re.compile(f"{IPV4_RE}|{IPV6_RE}")
_INT64 = (-(2 ** 63), 2 ** 63 - 1)
_NONE = type(None)
# Types of the values of keys outside the contract that cannot hide a lone surrogate
# (strings are checked; nested lists and objects are left to the SQL rules' check).
_PLAIN = frozenset({str, int, float, bool, _NONE})


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema of a contract table's typed rows."""
    return pa.schema([(c.name, ARROW_TYPE[c.kind]) for c in table.columns])


@dataclass
class Checked:
    """One posted batch after the checks: the good rows (typed, by column), the record
    index of each good row, and a status per record."""

    table: Table
    columns: dict[str, list[Any]]
    index: list[int]
    statuses: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rejected(self) -> list[dict[str, Any]]:
        return [s for s in self.statuses if s["status"] == "rejected"]

    def arrow(self) -> pa.Table:
        """The good rows as an Arrow table of the contract types."""
        return pa.table(self.columns, schema=arrow_schema(self.table))


def _text(value: Any) -> str | None:
    """A JSON value as the text a CSV cell would hold."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def _utf8(text: str) -> bool:
    """Whether the text can be UTF-8 (a lone surrogate escaped in the JSON cannot)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_utf8(texts: list[str]) -> bool:
    return "".join(texts).isascii() or all(map(_utf8, texts))


def _with_nones(values: list[Any], present: list[Any]) -> list[Any]:
    """PRESENT (the typed non-null values of VALUES, in order) back in VALUES' places."""
    if len(present) == len(values):
        return present
    it = iter(present)
    return [None if v is None else next(it) for v in values]


def _timestamp(value: Any) -> datetime | None:
    """A time the SQL rules read as this naive UTC timestamp; None when not sure."""
    if type(value) is int:
        return _EPOCH + timedelta(milliseconds=value) if 0 <= value <= _MAX_EPOCH_MS \
            else None
    if type(value) is not str or _ISO_TS.fullmatch(value) is None:
        return None
    return _iso_timestamp(value)


def _iso_timestamp(value: str) -> datetime | None:
    """An ISO-8601 text already matched by `_ISO` as a naive UTC timestamp; None when
    Python cannot read it (DuckDB's rules decide then)."""
    try:
        ts = datetime.fromisoformat(value)
        if ts.tzinfo is None:
            return ts
        if value[-1] == "Z" or value.endswith("+00:00"):  # the usual: parse without zone
            return datetime.fromisoformat(value[:-1] if value[-1] == "Z" else value[:-6])
        return ts.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError):
        return None


class _FastPath:
    """The accept-only Python twin of the SQL rules for one contract table."""

    def __init__(self, table: Table, max_prompt_bytes: int) -> None:
        # (name, kind, must not be blank, is an IP column)
        self.spec = [(c.name, c.kind, c.required and c.name != "prompt", c.name in IP_COLUMNS)
                     for c in table.columns]
        self.names = frozenset(table.names)
        self.max_prompt_bytes = max_prompt_bytes

    def columns(self, records: list[Any]) -> dict[str, list[Any]] | None:
        """Every record typed, column by column (the usual all-good batch, checked a
        column at a time); None when any record is not surely good."""
        if set(map(type, records)) != {dict}:
            return None
        extra = set(chain.from_iterable(records)) - self.names
        for k in extra:
            values = [r[k] for r in records if k in r]
            if not _utf8(k) or not set(map(type, values)) <= _PLAIN or \
                    not _all_utf8([v for v in values if type(v) is str]):
                return None
        out: dict[str, list[Any]] = {}
        for name, kind, required, is_ip in self.spec:
            values = list(map(dict.get, records, repeat(name)))
            types = set(map(type, values))
            if _NONE in types:
                if required:
                    return None
                types.discard(_NONE)
                present = [v for v in values if v is not None]
            else:
                present = values
            if not present:
                out[name] = values
                continue
            typed = self._column(name, kind, required, is_ip, types, present)
            if typed is None:
                return None
            out[name] = _with_nones(values, typed)
        return out

    def _column(self, name: str, kind: Kind, required: bool, is_ip: bool, types: set[type],
                present: list[Any]) -> list[Any] | None:
        """A column's non-null values typed, or None when one of them is not surely good."""
        if kind is Kind.STRING:
            ok = (types == {str} and _all_utf8(present)
                  and (not required or all(map(str.strip, present)))
                  and (not is_ip or all(map(_IP.fullmatch, present)))
                  and (name != "prompt" or max(map(len, present)) <= self.max_prompt_bytes // 4
                       or max(len(v.encode("utf-8")) for v in present)
                       <= self.max_prompt_bytes))
            return present if ok else None
        if kind is Kind.TIMESTAMP:
            iso = types == {str} and _ISO_LINES.fullmatch("\n".join(present)) is not None
            typed = list(map(_iso_timestamp if iso else _timestamp, present))
            return None if None in typed else typed
        if kind is Kind.INT:
            ok = types == {int} and _INT64[0] <= min(present) and max(present) <= _INT64[1]
            return present if ok else None
        if kind is Kind.BOOL:
            return present if types == {bool} else None
        ok = types == {list} and all(type(x) is str for x in chain.from_iterable(present)) \
            and _all_utf8(list(chain.from_iterable(present)))
        return present if ok else None

    def typed(self, record: dict[str, Any]) -> list[Any] | None:
        """The record's typed values in contract order, or None to leave it to the SQL."""
        out: list[Any] = []
        for name, kind, required, is_ip in self.spec:
            v = record.get(name)
            if v is None:
                if required:
                    return None
                out.append(None)
            elif kind is Kind.STRING:
                if type(v) is not str or not _utf8(v) or (required and not v.strip()):
                    return None
                if is_ip and _IP.fullmatch(v) is None:
                    return None
                if name == "prompt" and len(v) > self.max_prompt_bytes // 4 and \
                        len(v.encode("utf-8")) > self.max_prompt_bytes:
                    return None
                out.append(v)
            elif kind is Kind.TIMESTAMP:
                ts = _timestamp(v)
                if ts is None:
                    return None
                out.append(ts)
            elif kind is Kind.INT:
                if type(v) is not int or not _INT64[0] <= v <= _INT64[1]:
                    return None
                out.append(v)
            elif kind is Kind.BOOL:
                if type(v) is not bool:
                    return None
                out.append(v)
            else:  # STRING_LIST
                if type(v) is not list or not all(type(x) is str and _utf8(x) for x in v):
                    return None
                out.append(v)
        for k, v in record.items():  # other keys: only a lone surrogate makes them bad
            if k not in self.names and (not _utf8(k) or type(v) not in _PLAIN
                                        or (type(v) is str and not _utf8(v))):
                return None
        return out


def _con() -> duckdb.DuckDBPyConnection:
    """A per-thread scratch connection: views are replaced per batch, nothing is kept."""
    if not hasattr(_local, "con"):
        _local.con = connect(memory_limit="512MB", threads=1)
    return _local.con


def check_records(records: list[Any], table: Table, max_prompt_bytes: int) -> Checked:
    """Type and check posted records of a contract table; bad ones get field and reason.

    Records the fast path accepts are typed in Python; the rest go through one query
    applying the ingest's row rules (`typed_select`). A repeated key is caught by the
    store, not here.
    """
    fast = _FastPath(table, max_prompt_bytes)
    key = table.key or table.names[0]
    typed = fast.columns(records) if records else None
    if typed is not None:
        return Checked(table, typed, list(range(len(records))),
                       [{"index": i, key: k, "status": "accepted"}
                        for i, k in enumerate(typed[key])])
    columns: dict[str, list[Any]] = {c: [] for c in table.names}
    cols = list(columns.values())
    index: list[int] = []
    statuses: list[dict[str, Any]] = []
    unsure: list[int] = []
    for i, r in enumerate(records):
        values = fast.typed(r) if type(r) is dict else None
        if values is None:
            unsure.append(i)
            statuses.append({"index": i, key: None, "status": "rejected"})
            continue
        for col, v in zip(cols, values, strict=True):
            col.append(v)
        index.append(i)
        statuses.append({"index": i, key: r.get(key), "status": "accepted"})
    if unsure:
        good, rows = _check_sql([records[i] for i in unsure], unsure, statuses, table,
                                max_prompt_bytes)
        for c, values in good.to_pydict().items():
            columns[c].extend(values)
        index += rows
    return Checked(table, columns, index, statuses)


def _check_sql(records: list[Any], indices: list[int], statuses: list[dict[str, Any]],
               table: Table, max_prompt_bytes: int) -> tuple[pa.Table, list[int]]:
    """The SQL rules over the records the fast path left; sets their statuses and returns
    the good ones typed, with their record indices."""
    objects: list[int] = []
    key = table.key or table.names[0]
    columns: dict[str, list[str | None]] = {c: [] for c in table.names}
    for i, r in zip(indices, records, strict=True):
        bad = _unencodable(r) if isinstance(r, dict) and _has_surrogate(r) else None
        if isinstance(r, dict) and bad is None:
            objects.append(i)
            statuses[i] = {"index": i, key: _text(r.get(key)), "status": "accepted"}
            for c, values in columns.items():
                values.append(_text(r.get(c)))
        else:
            statuses[i] = {"index": i, key: None, "status": "rejected", "field": bad,
                           "error": "invalid UTF-8" if bad else "not a JSON object"}
    raw_rows = pa.table({"_row": pa.array(range(1, len(objects) + 1), pa.int64()),
                         **{c: pa.array(v, pa.string()) for c, v in columns.items()}})
    con = _con()
    con.register("_posted", raw_rows)
    raw = Raw("request", "_posted", {c: "VARCHAR" for c in table.names}, has_pre=False)
    typed = con.sql(typed_select(table, raw, 0, max_prompt_bytes)).to_arrow_table()
    con.unregister("_posted")
    typed = _python_range(typed, table)
    good: list[int] = []
    for row, column, reason in zip(typed.column("_row").to_pylist(),
                                   typed.column("_column").to_pylist(),
                                   typed.column("_reason").to_pylist(), strict=True):
        if reason is None:
            good.append(objects[row - 1])
        else:
            statuses[objects[row - 1]].update(status="rejected", field=column, error=reason)
    return typed.filter(pc.is_null(typed.column("_reason"))).select(table.names), good


def _python_range(typed: pa.Table, table: Table) -> pa.Table:
    """Good rows with a time outside the years 1-9999 (which DuckDB reads but Python, and
    so the service's schedule, cannot) marked bad."""
    reason, column = typed.column("_reason"), typed.column("_column")
    lo, hi = pa.scalar(datetime.min, pa.timestamp("us")), pa.scalar(datetime.max,
                                                                     pa.timestamp("us"))
    for c in table.columns:
        if c.kind is Kind.TIMESTAMP:
            values = typed.column(c.name)
            out = pc.and_(pc.is_null(reason), pc.fill_null(
                pc.or_(pc.less(values, lo), pc.greater(values, hi)), False))
            reason = pc.if_else(out, "timestamp outside the years 1-9999", reason)
            column = pc.if_else(out, c.name, column)
    return typed.set_column(typed.schema.get_field_index("_reason"), "_reason", reason) \
        .set_column(typed.schema.get_field_index("_column"), "_column", column)


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
