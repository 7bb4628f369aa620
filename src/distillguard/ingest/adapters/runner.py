"""Drive an adapter over a record stream: cut it into chunks, decode and map each chunk
(optionally in worker processes), and hand back typed tables in source order.

Decoding JSON and mapping fields is per-record Python work, so it is what runs in the
workers; the parent only reads raw lines and keeps the order, row numbers and checks.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import Any

import pyarrow as pa

from distillguard.errors import InputError
from distillguard.ingest.adapters.common import AdapterOptions, Batch, FieldError

# Rows of a source that must show at least one account before the field is judged wrong.
ACCOUNT_PROBE_ROWS = 1000
# Maps one decoded source record to a contract row, or to zero or more rows (OTel documents).
MapOne = Callable[[Any], dict[str, Any] | Iterable[dict[str, Any]]]


@dataclass(frozen=True)
class Failure:
    """Why a chunk could not be mapped; `row` counts the rows of the chunk (1-based)."""

    message: str
    row: int | None = None
    column: str | None = None


@dataclass(frozen=True)
class ChunkResult:
    table: pa.Table | None
    failure: Failure | None = None


def map_chunk(items: Sequence[Any], *, map_one: MapOne, columns: Sequence[str],
              json_lines: bool) -> ChunkResult:
    """Map a chunk of records; with `json_lines`, items are (line number, JSON text) pairs.

    Top-level and free of closures so that worker processes can run it.
    """
    batch = Batch(columns)
    for item in items:
        record = item
        if json_lines:
            line_no, text = item
            try:
                record = json.loads(text)
            except json.JSONDecodeError as exc:
                return ChunkResult(None, Failure(
                    f"line {line_no + exc.lineno - 1} is not valid JSON: {exc.msg}"))
        try:
            rows = map_one(record)
            for row in [rows] if isinstance(rows, dict) else rows:
                batch.add(row)
        except FieldError as exc:
            return ChunkResult(None, Failure(str(exc), len(batch) + 1, exc.field))
    return ChunkResult(batch.table())


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


@contextmanager
def executor(workers: int) -> Iterator[Executor | None]:
    """A process pool for `workers` > 1, else None (run inline).

    Workers fork from a fork server that has imported the adapters once: cheap to start,
    and safe even though this process may run DuckDB and Arrow threads. pandas is preloaded
    too because pyarrow imports it on the first `pa.array` call (seconds, in every worker).
    """
    if workers <= 1:
        yield None
        return
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["distillguard.ingest.adapters", "pandas"])
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _results(pool: Executor | None, fn: Callable[[list[Any]], ChunkResult],
             chunks: Iterator[list[Any]], window: int) -> Iterator[ChunkResult]:
    """Chunk results in order; at most `window` chunks in flight so memory stays bounded."""
    if pool is None:
        yield from map(fn, chunks)
        return
    pending: deque[Future[ChunkResult]] = deque()
    for chunk in chunks:
        pending.append(pool.submit(fn, chunk))
        if len(pending) >= window:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _no_account(label: str, account_field: str) -> InputError:
    return InputError(
        f"none of the first records has the account field {account_field!r}; choose the "
        "field that identifies the billing account with --account-attribute",
        file=label, row=1, column=account_field)


def run(label: str, items: Iterable[Any], fn: Callable[[list[Any]], ChunkResult],
        options: AdapterOptions, account_field: str,
        pool: Executor | None) -> Iterator[tuple[str, pa.Table]]:
    """(label, table) pairs for one source, rows numbered across its chunks.

    A row without an account is left null for the validator to quarantine; but when none
    of the first ACCOUNT_PROBE_ROWS rows has one, the account field is wrong, which only
    the user can fix, so the run stops.
    """
    first_row, seen_account = 1, False
    window = 2 * max(options.workers, 1)
    for result in _results(pool, fn, _chunks(items, options.batch_rows), window):
        if result.failure is not None:
            f = result.failure
            row = None if f.row is None else first_row + f.row - 1
            raise InputError(f.message, file=label, row=row, column=f.column)
        table = result.table
        if table is None or table.num_rows == 0:
            continue
        seen_account = seen_account or table.column("account_id").null_count < table.num_rows
        if not seen_account and first_row - 1 + table.num_rows >= ACCOUNT_PROBE_ROWS:
            raise _no_account(label, account_field)
        yield label, table
        first_row += table.num_rows
    if not seen_account and first_row > 1:
        raise _no_account(label, account_field)
