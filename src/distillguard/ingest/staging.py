"""Bring every input file into the engine as a *raw* relation, row numbers attached.

A raw relation has `_row` (1-based record number in its file), optionally `_pre_column`
and `_pre_reason` (a record that could not even be parsed), and the contract columns
the file carries, in whatever type the file stored them. Typing and row checks happen
in one place afterwards (`validate.py`), so every format gets the same rules.

Parquet is read in place by DuckDB. JSON Lines, CSV, adapter output and Parquet files
with invalid UTF-8 are streamed in batches into a staging table, strings kept as bytes
so that invalid UTF-8 becomes a quarantined row instead of a crash.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from distillguard.contract import Table
from distillguard.errors import InputError
from distillguard.ingest.sources import Source


@dataclass(frozen=True)
class Raw:
    """A raw relation registered in the connection, and the file it stands for."""

    file: str
    relation: str
    columns: dict[str, str]  # contract column -> DuckDB type as stored
    has_pre: bool


def _describe(con: duckdb.DuckDBPyConnection, relation: str) -> dict[str, str]:
    return {name: str(dtype) for name, dtype, *_ in con.execute(f"DESCRIBE {relation}").fetchall()}


def _contract_columns(described: dict[str, str], table: Table) -> dict[str, str]:
    """The contract columns present, matched case-sensitively as the contract names them."""
    return {c: described[c] for c in table.names if c in described}


def _check_required(file: str, present: dict[str, str], table: Table) -> None:
    for col in table.required:
        if col not in present:
            raise InputError(f"missing required column of the {table.name} table", file=file,
                             column=col)


def _as_binary(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Strings as bytes: DuckDB then decodes them itself and reports invalid UTF-8 per row."""
    arrays, fields = [], []
    for field, arr in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_string(field.type) or pa.types.is_large_string(field.type):
            arr = arr.view(pa.binary() if pa.types.is_string(field.type) else pa.large_binary())
            field = pa.field(field.name, arr.type)
        arrays.append(arr)
        fields.append(field)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


class Stager:
    """Registers raw relations for the files of one table in one connection."""

    def __init__(self, con: duckdb.DuckDBPyConnection, table: Table, batch_rows: int) -> None:
        self.con, self.table, self.batch_rows = con, table, batch_rows
        self._n = 0

    def _name(self) -> str:
        self._n += 1
        return f"_raw_{self.table.name}_{self._n}"

    def _stage_batches(self, file: str, batches: Iterator[pa.RecordBatch]) -> Raw:
        """Append Arrow batches (with `_row`) to a fresh staging table."""
        name = self._name()
        created = False
        for batch in batches:
            self.con.register("_incoming", batch)
            if created:
                self.con.execute(f"INSERT INTO {name} BY NAME SELECT * FROM _incoming")
            else:
                self.con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM _incoming")
                created = True
            self.con.unregister("_incoming")
        if not created:
            raise InputError("file holds no records", file=file)
        described = _describe(self.con, name)
        present = _contract_columns(described, self.table)
        _check_required(file, present, self.table)
        return Raw(file, name, present, "_pre_reason" in described)

    # --- Parquet -----------------------------------------------------------------------
    def parquet(self, path: Path) -> Raw:
        file = str(path)
        name = self._name()
        lit = file.replace("'", "''")
        try:
            self.con.execute(
                f"CREATE TEMP VIEW {name} AS SELECT file_row_number + 1 AS _row, * "
                f"EXCLUDE (file_row_number) FROM read_parquet('{lit}', file_row_number = true)")
            present = _contract_columns(_describe(self.con, name), self.table)
        except duckdb.Error as exc:
            raise InputError(f"unreadable Parquet file: {str(exc).splitlines()[0]}",
                             file=file) from None
        _check_required(file, present, self.table)
        return Raw(file, name, present, False)

    def parquet_as_bytes(self, path: Path) -> Raw:
        """Re-read a Parquet file whose strings are not all valid UTF-8, strings as bytes."""
        file = str(path)
        pf = pq.ParquetFile(path)
        wanted = [c for c in pf.schema_arrow.names if c in self.table.names]

        def batches() -> Iterator[pa.RecordBatch]:
            start = 1
            for batch in pf.iter_batches(batch_size=self.batch_rows, columns=wanted):
                batch = _as_binary(batch)
                rows = pa.array(range(start, start + batch.num_rows), pa.int64())
                start += batch.num_rows
                yield batch.add_column(0, "_row", rows)

        return self._stage_batches(file, batches())

    # --- Arrow tables from adapters ------------------------------------------------------
    def arrow(self, file: str, tables: Iterator[pa.Table]) -> Raw:
        def batches() -> Iterator[pa.RecordBatch]:
            start = 1
            for tbl in tables:
                for batch in tbl.to_batches(max_chunksize=self.batch_rows):
                    batch = _as_binary(batch)
                    rows = pa.array(range(start, start + batch.num_rows), pa.int64())
                    start += batch.num_rows
                    yield batch.add_column(0, "_row", rows)

        return self._stage_batches(file, batches())

    # --- CSV ---------------------------------------------------------------------------
    def csv(self, path: Path) -> Raw:
        file = str(path)
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                header_line = fh.readline()
            header = next(csv.reader([header_line.decode("utf-8-sig", "replace")]))
        except (OSError, EOFError, StopIteration, csv.Error, zlib.error) as exc:
            raise InputError(f"unreadable CSV file: {exc}", file=file) from None
        if not header or not any(header):
            raise InputError("CSV file has no header row", file=file)
        malformed: list[tuple[int, str]] = []

        def on_invalid(row: pacsv.InvalidRow) -> str:
            # Numbered as the record it would be if every record were one line (header = 1).
            line = row.number if row.number is not None else 0
            malformed.append((line - 1, f"malformed CSV record (line {line}): expected "
                              f"{row.expected_columns} fields, found {row.actual_columns}"))
            return "skip"

        read = pacsv.ReadOptions(block_size=1 << 24, use_threads=False)
        parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid)
        convert = pacsv.ConvertOptions(column_types={h: pa.string() for h in header},
                                       check_utf8=False, strings_can_be_null=True)

        def batches() -> Iterator[pa.RecordBatch]:
            parsed = 0
            try:
                reader = pacsv.open_csv(path, read_options=read, parse_options=parse,
                                        convert_options=convert)
                for batch in reader:
                    # The handler has seen this block's malformed records before it is yielded.
                    rows = _record_numbers(parsed, batch.num_rows, [m[0] for m in malformed])
                    parsed += batch.num_rows
                    # Null `_pre_*` columns so the malformed records can be appended by name.
                    nulls = pa.nulls(batch.num_rows, pa.string())
                    yield pa.RecordBatch.from_arrays(
                        [rows, nulls, nulls, *_as_binary(batch).columns],
                        ["_row", "_pre_column", "_pre_reason", *batch.schema.names])
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputError(f"unreadable CSV file: {exc}", file=file) from None
            if malformed:
                # The records the parser could not split: kept, with the reason.
                n = len(malformed)
                yield pa.RecordBatch.from_pydict({
                    "_row": pa.array([m[0] for m in malformed], pa.int64()),
                    "_pre_column": pa.array(["(record)"] * n, pa.string()),
                    "_pre_reason": pa.array([m[1] for m in malformed], pa.string()),
                })

        return self._stage_batches(file, batches())

    # --- JSON Lines ----------------------------------------------------------------------
    def jsonl(self, path: Path) -> Raw:
        file = str(path)
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        cols = self.table.names
        paths = ", ".join(f"'$.\"{c}\"'" for c in cols)
        values = ", ".join(f"_v[{i}]" for i in range(1, len(cols) + 1))
        name = self._name()
        self.con.execute(
            f"CREATE TEMP TABLE {name} (_row BIGINT, _pre_column VARCHAR, _pre_reason VARCHAR, "
            + ", ".join(f'"{c}" VARCHAR' for c in cols) + ")")
        keys: set[str] = set()
        n_rows = 0
        try:
            with opener(path, "rb") as fh:
                for lines, first in _line_chunks(fh, self.batch_rows):
                    numbers = pa.array(range(first, first + len(lines)), pa.int64())
                    batch = pa.table({"_row": numbers, "_line": pa.array(lines, pa.binary())})
                    self.con.register("_incoming", batch)
                    self.con.execute(f"""
                        INSERT INTO {name}
                        WITH d AS (SELECT _row, try(decode(_line)) AS _txt FROM _incoming
                                   WHERE coalesce(length(trim(try(decode(_line)))), 1) > 0),
                             j AS (SELECT _row, _txt, try(_txt::JSON) AS _j FROM d),
                             v AS (SELECT _row, _txt, _j,
                                     CASE WHEN json_type(_j) = 'OBJECT'
                                          THEN json_extract_string(_j, [{paths}]) END AS _v
                                   FROM j)
                        SELECT _row,
                          CASE WHEN _v IS NULL THEN '(record)' END,
                          CASE WHEN _txt IS NULL THEN 'invalid UTF-8'
                               WHEN _j IS NULL THEN 'invalid JSON'
                               WHEN _v IS NULL THEN 'record is not a JSON object'
                          END,
                          {values}
                        FROM v""")
                    keys.update(k for (k,) in self.con.execute(
                        "SELECT DISTINCT unnest(json_keys(try(try(decode(_line))::JSON))) "
                        "FROM _incoming").fetchall() if k is not None)
                    self._locate_bad_utf8(name, file)
                    self.con.unregister("_incoming")
                    n_rows += len(lines)
        except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise InputError(f"unreadable JSON Lines file: {exc}", file=file) from None
        if n_rows == 0:
            raise InputError("file holds no records", file=file)
        present = {c: "VARCHAR" for c in cols if c in keys}
        _check_required(file, present, self.table)
        return Raw(file, name, present, True)

    def _locate_bad_utf8(self, name: str, file: str) -> None:
        """Name the field that holds invalid UTF-8 (only bad lines come back to Python)."""
        bad = self.con.execute(
            "SELECT _row, _line FROM _incoming WHERE true "
            "AND try(decode(_line)) IS NULL").fetchall()
        for row, line in bad:
            column = "(record)"
            try:
                record = json.loads(bytes(line).decode("utf-8", "surrogateescape"))
                if isinstance(record, dict):
                    column = next((k for k, v in record.items()
                                   if _has_surrogate(k) or _has_surrogate(v)), column)
            except ValueError:
                pass
            self.con.execute(f"UPDATE {name} SET _pre_column = ? WHERE _row = ?", [column, row])


def _has_surrogate(value: object) -> bool:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def _record_numbers(parsed: int, n: int, skipped: list[int]) -> pa.Array:
    """1-based record numbers of the next `n` parsed records, stepping over the `skipped`
    (malformed) record numbers so that later rows keep their place in the file."""
    p = np.arange(parsed + 1, parsed + n + 1, dtype=np.int64)
    m = np.sort(np.asarray(skipped, dtype=np.int64))
    return pa.array(p + np.searchsorted(m - np.arange(len(m)), p, side="right"))


def _line_chunks(fh: io.BufferedIOBase, batch_rows: int) -> Iterator[tuple[list[bytes], int]]:
    """Lines in chunks of about `batch_rows`, with the 1-based number of the first line."""
    first, pending = 1, b""
    block = fh.read(1 << 24).removeprefix(b"\xef\xbb\xbf")  # a BOM, as Windows tools write
    while block:
        lines = (pending + block).split(b"\n")
        pending = lines.pop()
        while len(lines) >= batch_rows:
            yield lines[:batch_rows], first
            first += batch_rows
            lines = lines[batch_rows:]
        if lines:
            yield lines, first
            first += len(lines)
        block = fh.read(1 << 24)
    if pending:
        yield [pending], first


def stage(stager: Stager, source: Source) -> Raw:
    """The raw relation for one source file."""
    if source.fmt == "parquet":
        return stager.parquet(source.path)
    if source.fmt == "csv":
        return stager.csv(source.path)
    return stager.jsonl(source.path)
