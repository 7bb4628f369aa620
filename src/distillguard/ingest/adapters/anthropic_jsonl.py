"""anthropic-jsonl: raw Anthropic Messages API request/response logs, one JSON object a
line, as an API gateway writes them. The account is often the request's
`metadata.user_id`: pass `--account-attribute request.metadata.user_id` for that."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from distillguard.ingest.adapters import request_log
from distillguard.ingest.adapters.common import Adapter, AdapterOptions


def read(paths: list[Path], options: AdapterOptions) -> Iterator[tuple[str, pa.Table]]:
    """Exchanges tables from Anthropic-shaped request logs (the time must be in `timestamp`)."""
    return request_log.read(paths, options, created_fallback=False)


ADAPTER = Adapter(
    name="anthropic-jsonl",
    description="Anthropic Messages request/response logs, one JSON object a line (request, "
                "response, gateway metadata)",
    read=read,
)
