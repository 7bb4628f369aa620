"""JSON lines read row by row, with errors that name the file and the row.

Small inputs the commands read directly (provenance samples, the simulator's prompt
corpus); the traffic logs go through the engine (`ingest`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillguard.errors import InputError


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, object) for each non-empty line; bad JSON is an InputError."""
    if not Path(path).is_file():
        raise InputError("file not found", file=str(path))
    with Path(path).open(encoding="utf-8") as handle:
        for row_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"invalid JSON: {exc.msg}", file=str(path), row=row_no) from exc
            if not isinstance(row, dict):
                raise InputError("each line must be a JSON object", file=str(path), row=row_no)
            yield row_no, row
