"""openai-jsonl: raw OpenAI Chat Completions (or Responses) request/response logs, one JSON
object a line, as an API gateway writes them. Without a `timestamp`, the response's
`created` (unix seconds) gives the time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from distillguard.ingest.adapters import request_log
from distillguard.ingest.adapters.common import Adapter, AdapterOptions


def read(paths: list[Path], options: AdapterOptions) -> Iterator[tuple[str, pa.Table]]:
    """Exchanges tables from OpenAI-shaped request logs."""
    return request_log.read(paths, options, created_fallback=True)


ADAPTER = Adapter(
    name="openai-jsonl",
    description="OpenAI request/response logs, one JSON object a line (request, response, "
                "gateway metadata)",
    read=read,
)
