"""Adapters: read the logs providers already have (OpenTelemetry GenAI spans, LiteLLM spend
logs, raw OpenAI / Anthropic request logs) as contract `exchanges` tables.

Each adapter streams `(source label, table)` pairs; the core ingest validates them like
contract rows (file = label, row = row index within the label). Mappings: docs/adapters.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.errors import InputError
from distillguard.ingest.adapters import anthropic_jsonl, litellm, openai_jsonl, otel
from distillguard.ingest.adapters.common import Adapter, AdapterOptions, schema_for

__all__ = ["ADAPTERS", "Adapter", "AdapterOptions", "Converted", "get", "to_contract_parquet"]

ADAPTERS: dict[str, Adapter] = {
    a.name: a for a in (otel.ADAPTER, litellm.ADAPTER, openai_jsonl.ADAPTER,
                        anthropic_jsonl.ADAPTER)
}


def get(fmt: str) -> Adapter:
    """The adapter for a format name, or an InputError listing the known ones."""
    try:
        return ADAPTERS[fmt]
    except KeyError:
        raise InputError(f"unknown log format {fmt!r}; known: {', '.join(ADAPTERS)}") from None


@dataclass(frozen=True)
class Converted:
    """What `to_contract_parquet` wrote."""

    rows: int
    rows_without_prompt: int  # no prompt text in the source: text signals skip these rows


def to_contract_parquet(fmt: str, paths: list[Path], options: AdapterOptions,
                        out_path: Path) -> Converted:
    """Write the canonical exchanges Parquet of a source.

    Streams: one Parquet row group per adapter batch, so memory stays bounded.
    """
    writer: pq.ParquetWriter | None = None
    rows = without_prompt = 0
    try:
        for _, table in get(fmt).read(list(paths), options):
            if writer is None:
                writer = pq.ParquetWriter(out_path, schema_for(table.column_names))
            writer.write_table(table)
            rows += table.num_rows
            without_prompt += table.column("prompt").null_count
        if writer is None:  # an empty source still gives a valid, empty file
            empty = schema_for(["exchange_id", "ts", "account_id", "prompt"])
            pq.write_table(pa.Table.from_pylist([], schema=empty), out_path)
    finally:
        if writer is not None:
            writer.close()
    return Converted(rows, without_prompt)
