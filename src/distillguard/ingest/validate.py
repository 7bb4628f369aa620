"""Contract typing and row checks, written once as SQL and applied to every raw relation.

Each raw relation becomes a typed relation with `_file`, `_row`, `_column` and `_reason`
(NULL when the row is good). Good rows form the contract table; the others go to the
quarantine table with their reason. Nothing is dropped: read = accepted + quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

from distillguard.contract import Kind, Table
from distillguard.ingest.staging import Raw

SQL_TYPE = {Kind.STRING: "VARCHAR", Kind.TIMESTAMP: "TIMESTAMP", Kind.INT: "BIGINT",
            Kind.BOOL: "BOOLEAN", Kind.STRING_LIST: "VARCHAR[]"}

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_RE = rf"({_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9a-fA-F]{1,4}"
# RFC 3986 section 3.2.2: the groups after "::" (i = at most i groups before it); the last
# 32 bits may be written as an IPv4 address in any form, compressed or not.
_LS32 = rf"({_H}:{_H}|{IPV4_RE})"
_TAILS = [rf"({_H}:){{{n}}}{_LS32}" for n in (5, 4, 3, 2, 1)] + [_LS32, _H, ""]
IPV6_RE = "(" + "|".join([rf"({_H}:){{6}}{_LS32}"] + [
    (rf"(({_H}:){{0,{i - 1}}}{_H})?" if i else "") + "::" + tail
    for i, tail in enumerate(_TAILS)]) + ")"
IP_COLUMNS = ("ip", "signup_ip")


@dataclass(frozen=True)
class Check:
    """One row rule: a SQL condition that marks the row bad, the column and the reason."""

    condition: str
    column: str
    reason: str


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _text(col: str, stored: str) -> str:
    """A stored column as text: bytes are decoded (NULL when not valid UTF-8)."""
    if stored == "BLOB":
        return f"try(decode({col}))"
    return col if stored == "VARCHAR" else f"CAST({col} AS VARCHAR)"


def typed_expr(kind: Kind, col: str, stored: str) -> str:
    """SQL turning a stored column into its contract type; NULL where it cannot be read."""
    if kind is Kind.STRING:
        return _text(col, stored)
    if kind is Kind.TIMESTAMP:
        if stored.startswith("TIMESTAMP WITH TIME ZONE"):
            return f"timezone('UTC', {col})"
        if stored.startswith("TIMESTAMP") or stored == "DATE":
            return f"CAST({col} AS TIMESTAMP)"
        if stored in ("BIGINT", "INTEGER", "HUGEINT", "UBIGINT", "DOUBLE", "FLOAT"):
            return f"try(make_timestamp(CAST({col} AS BIGINT) * 1000))"
        s = _text(col, stored)
        return (f"CASE WHEN regexp_full_match(trim({s}), '-?[0-9]{{1,15}}') "
                f"THEN try(make_timestamp(CAST(trim({s}) AS BIGINT) * 1000)) "
                f"ELSE timezone('UTC', try_cast(trim({s}) AS TIMESTAMPTZ)) END")
    if kind is Kind.INT:
        if stored in ("DOUBLE", "FLOAT") or stored.startswith("DECIMAL"):
            return f"CASE WHEN {col} = floor({col}) THEN try_cast({col} AS BIGINT) END"
        if stored in ("VARCHAR", "BLOB"):
            # Digits only (an integral "3.0" too): a cast alone would round "4.5" to 5.
            text = f"trim({_text(col, stored)})"
            return (f"CASE WHEN regexp_full_match({text}, '[+-]?[0-9]+([.]0*)?') "
                    f"THEN try_cast({text} AS BIGINT) END")
        return f"try_cast({col} AS BIGINT)"
    if kind is Kind.BOOL:
        if stored == "BOOLEAN":
            return col
        if stored in ("VARCHAR", "BLOB"):
            return f"try_cast(lower(trim({_text(col, stored)})) AS BOOLEAN)"
        return f"try_cast({col} AS BOOLEAN)"
    # STRING_LIST: a list, or a JSON array in a string
    if stored.endswith("[]"):
        return f"CAST({col} AS VARCHAR[])"
    s = _text(col, stored)
    return f"CASE WHEN trim({s}) = '' THEN NULL ELSE try_cast(try({s}::JSON) AS VARCHAR[]) END"


def _problem(kind: Kind) -> str:
    return {Kind.TIMESTAMP: "unparseable timestamp", Kind.INT: "not an integer",
            Kind.BOOL: "not a boolean", Kind.STRING_LIST: "not a list of strings (JSON array)",
            Kind.STRING: "invalid UTF-8"}[kind]


def _raw(name: str) -> str:
    return _q(f"__raw_{name}")


def checks(table: Table, raw: Raw, max_prompt_bytes: int) -> list[Check]:
    """The row rules for one raw relation, most basic first (the first failing one is kept).

    Conditions see the stored value as `"__raw_<col>"` and the typed value as `"<col>"`.
    """
    out: list[Check] = []
    if raw.has_pre:
        out.append(Check("_pre_reason IS NOT NULL", "_pre_column", "_pre_reason"))
    for col in table.columns:
        stored = raw.columns.get(col.name)
        if stored is None:
            continue
        src, typed = _raw(col.name), _q(col.name)
        if stored == "BLOB":
            # Bytes that do not decode, not just any value that fails to type.
            out.append(Check(f"{src} IS NOT NULL AND {_text(src, stored)} IS NULL",
                             f"'{col.name}'", "'invalid UTF-8'"))
        if col.required and col.name != "prompt":
            text = _text(src, stored) if stored in ("VARCHAR", "BLOB") else None
            blank = f" OR trim({text}) = ''" if text else ""
            out.append(Check(f"{src} IS NULL{blank}", f"'{col.name}'",
                             f"'missing {col.name}'"))
        if col.kind is not Kind.STRING:
            blank = (f" AND trim({_text(src, stored)}) <> ''"
                     if stored in ("VARCHAR", "BLOB") else "")
            out.append(Check(f"{src} IS NOT NULL{blank} AND {typed} IS NULL",
                             f"'{col.name}'", f"'{_problem(col.kind)}'"))
    for ip in IP_COLUMNS:
        if ip in raw.columns:
            typed = _q(ip)
            out.append(Check(
                f"{typed} IS NOT NULL AND trim({typed}) <> '' AND NOT regexp_full_match("
                f"trim({typed}), '{IPV4_RE}|{IPV6_RE}')",
                f"'{ip}'", "'invalid IP address'"))
    if "prompt" in raw.columns:
        out.append(Check(f"strlen(prompt) > {int(max_prompt_bytes)}", "'prompt'",
                         f"'prompt larger than {int(max_prompt_bytes)} bytes'"))
    return out


def _case(rules: list[Check], pick: str) -> str:
    if not rules:
        return "NULL"
    return "CASE " + " ".join(f"WHEN {r.condition} THEN {getattr(r, pick)}" for r in rules) + \
        " END"


def typed_select(table: Table, raw: Raw, file_index: int, max_prompt_bytes: int) -> str:
    """SELECT over one raw relation giving contract-typed columns plus row provenance."""
    inner = ["_row"]
    if raw.has_pre:
        inner += ["_pre_column", "_pre_reason"]
    inner += [f"{_q(c)} AS {_raw(c)}" for c in raw.columns]
    for col in table.columns:
        stored = raw.columns.get(col.name)
        expr = (typed_expr(col.kind, _q(col.name), stored) if stored
                else f"NULL::{SQL_TYPE[col.kind]}")
        inner.append(f"{expr} AS {_q(col.name)}")
    rules = checks(table, raw, max_prompt_bytes)
    file_lit = raw.file.replace("'", "''")
    return f"""
        SELECT {file_index} AS _file_index, '{file_lit}' AS _file, _row,
               CAST({_case(rules, "column")} AS VARCHAR) AS _column,
               CAST({_case(rules, "reason")} AS VARCHAR) AS _reason,
               {", ".join(_q(c) for c in table.names)}
        FROM (SELECT {", ".join(inner)} FROM {raw.relation})
    """
