"""Shared plumbing of the log-format adapters: options, the registry entry type, and the
pieces every format needs (reading lines, timestamps, field lookup, typed batches).

Kept apart from `__init__` so the format modules can import it without a cycle.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from distillguard.contract import EXCHANGES, Kind
from distillguard.errors import InputError

ARROW_TYPES: dict[Kind, pa.DataType] = {
    Kind.STRING: pa.string(),
    Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"),
    Kind.INT: pa.int64(),
    Kind.BOOL: pa.bool_(),
    Kind.STRING_LIST: pa.list_(pa.string()),
}


@dataclass(frozen=True)
class AdapterOptions:
    """What a format needs beyond the file list.

    account_attribute: where the billing account comes from. otel: a span or resource
    attribute key (required, no standard one exists); litellm: a column, optionally followed
    by a path into its JSON (default `api_key`); openai-jsonl / anthropic-jsonl: a dotted
    path into each record (default `account_id`).
    dsn / table: read LiteLLM straight from PostgreSQL (read-only) instead of files.
    batch_rows: records per chunk (one yielded table each), so memory stays bounded.
    workers: processes that decode and map chunks in parallel (1 = in this process).
    """

    account_attribute: str | None = None
    dsn: str | None = None
    table: str = "LiteLLM_SpendLogs"
    batch_rows: int = 50_000
    workers: int = 1


@dataclass(frozen=True)
class Adapter:
    """One log format: `read` yields (source label, exchanges table) pairs in source order."""

    name: str
    description: str
    read: Callable[[list[Path], AdapterOptions], Iterator[tuple[str, pa.Table]]]


class FieldError(ValueError):
    """A source field that cannot be mapped; the adapter adds file and row to make an InputError."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def schema_for(columns: Sequence[str]) -> pa.Schema:
    """Arrow schema of the given exchanges columns, typed as the contract says."""
    return pa.schema([(c, ARROW_TYPES[EXCHANGES.column(c).kind]) for c in columns])


class Batch:
    """Rows of one adapter accumulated column-wise, then turned into one typed Arrow table."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.schema = schema_for(columns)
        self.data: dict[str, list[Any]] = {c: [] for c in columns}

    def __len__(self) -> int:
        return len(self.data["exchange_id"])

    def add(self, row: dict[str, Any]) -> None:
        for column, values in self.data.items():
            values.append(row.get(column))

    def table(self) -> pa.Table:
        arrays = [pa.array(self.data[f.name], type=f.type) for f in self.schema]
        return pa.Table.from_arrays(arrays, schema=self.schema)


JSON_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")


def expand(paths: Sequence[Path], suffixes: Sequence[str]) -> list[Path]:
    """Named files as given; directories expanded recursively, sorted, to files with a
    wanted suffix (hidden and `_`-prefixed files, like Spark's `_SUCCESS`, are skipped)."""
    if not paths:
        raise InputError("no input files given")
    out: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            out.append(path)
            continue
        found = sorted(p for p in path.rglob("*") if p.is_file()
                       and not p.name.startswith((".", "_"))
                       and p.name.lower().endswith(tuple(suffixes)))
        if not found:
            raise InputError(f"directory holds no {', '.join(suffixes)} files", file=str(path))
        out.extend(found)
    return out


def open_text(path: Path) -> IO[str]:
    """Open a text file, transparently gunzipping `.gz`."""
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line; decoding is left to the workers."""
    label = str(path)
    try:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if line.strip():
                    yield line_no, line.rstrip("\r\n")
    except FileNotFoundError:
        raise InputError("file not found", file=label) from None
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:
        raise InputError(f"cannot read as UTF-8 text: {exc}", file=label) from None


def parse_ts(value: Any, field: str) -> datetime | None:
    """A timestamp from an ISO-8601 string (naive = UTC), epoch milliseconds or a datetime."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, bool):
        raise FieldError(field, f"timestamp must be ISO-8601 or epoch milliseconds, got {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            raise FieldError(field, f"not an ISO-8601 timestamp: {value[:40]!r}") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise FieldError(field, f"timestamp must be ISO-8601 or epoch milliseconds, got {value!r}")


def lookup(record: Any, path: str) -> Any:
    """Value at a dotted path in nested dicts (an exact key with dots wins); None if absent."""
    if not isinstance(record, dict):
        return None
    if path in record:
        return record[path]
    head, dot, rest = path.partition(".")
    if not dot:
        return None
    return lookup(record.get(head), rest)


def as_id(value: Any, field: str) -> str | None:
    """An identifier column value: strings and integers as text; empty means absent."""
    if value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise FieldError(field, f"expected a string identifier, got {type(value).__name__}")


def as_int(value: Any, field: str) -> int | None:
    """A count (tokens): integers or integral strings/floats; None if absent."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise FieldError(field, f"expected an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            pass
    raise FieldError(field, f"expected an integer, got {value!r}")


def maybe_json(value: Any, field: str) -> Any:
    """Decode a JSON-encoded string (CSV exports, OTel string attributes); pass others through."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise FieldError(field, f"not valid JSON: {exc.msg}") from None
