"""litellm: rows of the LiteLLM proxy's `LiteLLM_SpendLogs` table, exported as CSV or JSON
Lines, or read straight from its PostgreSQL database (read-only, server-side cursor).

The proxy keeps the request body (`proxy_server_request`; older releases: `messages`) and
the `response` only when `store_prompts_in_spend_logs` is on. Otherwise they hold `{}` and
the text columns stay null: the detector then skips text signals and says so.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from psycopg.rows import dict_row

from distillguard.errors import InputError
from distillguard.ingest.adapters.chat import exchange_columns
from distillguard.ingest.adapters.common import (
    JSON_SUFFIXES,
    Adapter,
    AdapterOptions,
    FieldError,
    as_id,
    as_int,
    expand,
    iter_lines,
    lookup,
    maybe_json,
    open_text,
    parse_ts,
)
from distillguard.ingest.adapters.runner import executor, map_chunk, run

DEFAULT_ACCOUNT_FIELD = "api_key"
COLUMNS = ("exchange_id", "ts", "account_id", "prompt", "org_id", "api_key_id", "model", "ip",
           "system_prompt", "n_messages", "tool_names", "has_image", "thinking",
           "input_tokens", "output_tokens", "response", "status")
# LiteLLM_SpendLogs columns read; any missing from an older schema is treated as absent.
SOURCE_COLUMNS = ("request_id", "startTime", "api_key", "user", "end_user", "team_id",
                  "organization_id", "model", "requester_ip_address", "prompt_tokens",
                  "completion_tokens", "messages", "response", "proxy_server_request",
                  "status", "metadata")
KEY_COLUMNS = ("request_id", "startTime")
CSV_SUFFIXES = (".csv", ".csv.gz")


def _request_body(row: dict[str, Any]) -> tuple[Any, str]:
    """The stored request: `proxy_server_request` (current LiteLLM) or `messages` (older)."""
    body = maybe_json(row.get("proxy_server_request"), "proxy_server_request")
    if isinstance(body, dict) and body:
        return body, "proxy_server_request"
    messages = maybe_json(row.get("messages"), "messages")
    if isinstance(messages, str):  # a text-completion prompt
        messages = [{"role": "user", "content": messages}]
    if isinstance(messages, list):
        return {"messages": messages}, "messages"
    return messages or None, "messages"


def _status(row: dict[str, Any], metadata: Any) -> str | None:
    status = row.get("status") or None
    if status is None or status == "success":
        return None if status is None else "ok"
    code = lookup(metadata, "error_information.error_code")
    return "rate_limited" if str(code) == "429" else "error"


def map_row(row: dict[str, Any], account_field: str) -> dict[str, Any]:
    """Contract row of one LiteLLM_SpendLogs row (values as stored, JSON possibly as text)."""
    if not isinstance(row, dict):
        raise FieldError("record", "each line must be a JSON object")
    metadata = maybe_json(row.get("metadata"), "metadata")
    request, request_field = _request_body(row)
    response = maybe_json(row.get("response"), "response")
    out = exchange_columns(request, response if isinstance(response, dict) else None,
                           request_field, "response")
    if isinstance(response, str):
        out["response"] = response
    head = account_field.partition(".")[0]
    view = {**row, head: maybe_json(row.get(head), head)} if head != account_field else row
    out.update(
        exchange_id=as_id(row.get("request_id"), "request_id"),
        ts=parse_ts(row.get("startTime"), "startTime"),
        account_id=as_id(lookup(view, account_field), account_field),
        org_id=as_id(row.get("organization_id"), "organization_id"),
        api_key_id=as_id(row.get("api_key"), "api_key"),
        model=as_id(row.get("model"), "model") or out.get("model"),
        ip=as_id(row.get("requester_ip_address"), "requester_ip_address"),
        input_tokens=as_int(row.get("prompt_tokens"), "prompt_tokens"),
        output_tokens=as_int(row.get("completion_tokens"), "completion_tokens"),
        status=_status(row, metadata),
    )
    return out


def _csv_rows(path: Path, batch_rows: int) -> Iterator[dict[str, Any]]:
    """Rows of a CSV export as strings (JSON columns still encoded), streamed in blocks."""
    with open_text(path) as fh:
        header = next(csv.reader(fh), None)
    missing = sorted(set(KEY_COLUMNS) - set(header or []))
    if missing:
        raise InputError(f"CSV header lacks LiteLLM_SpendLogs columns {missing}",
                         file=str(path))
    try:
        reader = pacsv.open_csv(
            pa.input_stream(str(path)),
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, batch_rows * 256)),
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(header or [], pa.string())),
        )
        for record_batch in reader:
            yield from record_batch.to_pylist()
    except pa.ArrowInvalid as exc:
        raise InputError(f"malformed CSV: {exc}", file=str(path)) from None


def _file_source(path: Path, batch_rows: int) -> tuple[Iterator[Any], bool]:
    """Records of an export file, and whether they are JSON lines still to be decoded."""
    name = path.name.lower()
    if not path.exists():
        raise InputError("file not found", file=str(path))
    if name.endswith(CSV_SUFFIXES):
        return _csv_rows(path, batch_rows), False
    if name.endswith(JSON_SUFFIXES):
        return iter_lines(path), True
    raise InputError("a LiteLLM export must be .csv or .jsonl (optionally .gz)", file=str(path))


def _table_identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def pg_rows(dsn: str, table: str, batch_rows: int) -> Iterator[dict[str, Any]]:
    """Stream the spend-log table in (startTime, request_id) order in a READ ONLY transaction."""
    ident = _table_identifier(table)
    try:
        with psycopg.connect(dsn, row_factory=dict_row) as conn:
            conn.read_only = True
            conn.execute("SET TRANSACTION READ ONLY")
            present = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(ident)).description
            names = {col.name for col in present or []}
            missing = sorted(set(KEY_COLUMNS) - names)
            if missing:
                raise InputError(f"table lacks LiteLLM_SpendLogs columns {missing}",
                                 file=f"postgresql:{table}")
            wanted = [c for c in SOURCE_COLUMNS if c in names]
            query = sql.SQL('SELECT {} FROM {} ORDER BY "startTime", request_id').format(
                sql.SQL(", ").join(map(sql.Identifier, wanted)), ident)
            with conn.cursor(name="distillguard_spendlogs") as cur:
                cur.itersize = batch_rows
                cur.execute(query)
                yield from cur
    except psycopg.Error as exc:
        raise InputError(f"PostgreSQL: {str(exc).strip().splitlines()[0]}",
                         file=f"postgresql:{table}") from None


def read(paths: list[Path], options: AdapterOptions) -> Iterator[tuple[str, pa.Table]]:
    """Exchanges tables from CSV / JSON Lines exports, or from PostgreSQL when `dsn` is set."""
    account_field = options.account_attribute or DEFAULT_ACCOUNT_FIELD
    if options.dsn and paths:
        raise InputError("give either LiteLLM export files or --dsn, not both")
    map_one = partial(map_row, account_field=account_field)
    with executor(options.workers) as pool:
        if options.dsn:
            fn = partial(map_chunk, map_one=map_one, columns=COLUMNS, json_lines=False)
            rows = pg_rows(options.dsn, options.table, options.batch_rows)
            yield from run(f"postgresql:{options.table}", rows, fn, options, account_field, pool)
            return
        for path in expand(paths, CSV_SUFFIXES + JSON_SUFFIXES):
            records, json_lines = _file_source(path, options.batch_rows)
            fn = partial(map_chunk, map_one=map_one, columns=COLUMNS, json_lines=json_lines)
            yield from run(str(path), records, fn, options, account_field, pool)


ADAPTER = Adapter(
    name="litellm",
    description="LiteLLM proxy LiteLLM_SpendLogs rows: CSV / JSON Lines export, or PostgreSQL "
                "with --dsn (read-only)",
    read=read,
)
