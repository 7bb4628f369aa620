"""Raw request/response logs, one JSON object a line: the reader behind openai-jsonl and
anthropic-jsonl. The two differ only in the body shapes (handled by `chat`) and in the
OpenAI-only fallback for the time (`response.created`).

Each line is a gateway record wrapping the API bodies:
`{"id", "timestamp", "account_id", "org_id", "api_key_id", "client_ip", "user_agent",
"status_code", "request": {...}, "response": {...}}` (see docs/adapters.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from distillguard.ingest.adapters.chat import exchange_columns, status_from_http
from distillguard.ingest.adapters.common import (
    JSON_SUFFIXES,
    AdapterOptions,
    FieldError,
    as_id,
    expand,
    iter_lines,
    lookup,
    parse_ts,
)
from distillguard.ingest.adapters.runner import executor, map_chunk, run

DEFAULT_ACCOUNT_FIELD = "account_id"
COLUMNS = ("exchange_id", "ts", "account_id", "prompt", "org_id", "api_key_id", "model", "ip",
           "user_agent", "system_prompt", "n_messages", "tool_names", "has_image", "thinking",
           "input_tokens", "output_tokens", "response", "status")


def _ts(record: dict[str, Any], created_fallback: bool) -> datetime | None:
    if record.get("timestamp") is not None:
        return parse_ts(record["timestamp"], "timestamp")
    created = lookup(record, "response.created")
    if created_fallback and isinstance(created, int | float) and not isinstance(created, bool):
        return datetime.fromtimestamp(created, tz=UTC)  # OpenAI: unix seconds
    return None


def map_record(record: Any, account_field: str, created_fallback: bool) -> dict[str, Any]:
    """Contract row of one log record."""
    if not isinstance(record, dict):
        raise FieldError("record", "each line must be a JSON object")
    row = exchange_columns(record.get("request"), record.get("response"))
    status = status_from_http(record.get("status_code"), "status_code")
    if status is not None:
        row["status"] = status
    elif record.get("response") and "status" not in row:
        row["status"] = "ok"
    row.update(
        exchange_id=as_id(record.get("id") or lookup(record, "response.id"), "id"),
        ts=_ts(record, created_fallback),
        account_id=as_id(lookup(record, account_field), account_field),
        org_id=as_id(record.get("org_id"), "org_id"),
        api_key_id=as_id(record.get("api_key_id"), "api_key_id"),
        ip=as_id(record.get("client_ip"), "client_ip"),
        user_agent=as_id(record.get("user_agent"), "user_agent"),
    )
    return row


def read(paths: list[Path], options: AdapterOptions,
         created_fallback: bool) -> Iterator[tuple[str, pa.Table]]:
    """Yield one or more tables per file, rows in line order (blank lines skipped)."""
    account_field = options.account_attribute or DEFAULT_ACCOUNT_FIELD
    map_one = partial(map_record, account_field=account_field,
                      created_fallback=created_fallback)
    fn = partial(map_chunk, map_one=map_one, columns=COLUMNS, json_lines=True)
    with executor(options.workers) as pool:
        for path in expand(paths, JSON_SUFFIXES):
            yield from run(str(path), iter_lines(path), fn, options, account_field, pool)
