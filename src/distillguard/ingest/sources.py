"""Find the input files of a contract table and tell their format from the name."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from distillguard.errors import InputError

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".jsonl.gz": "jsonl",
           ".ndjson": "jsonl", ".csv": "csv", ".csv.gz": "csv"}


@dataclass(frozen=True)
class Source:
    """One input file and its format."""

    path: Path
    fmt: str


def file_format(path: Path) -> str | None:
    """The format named by the file's suffix, or None when it is not one we read."""
    name = path.name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if name.endswith(suffix):
            return FORMATS[suffix]
    return None


def discover(paths: list[Path]) -> list[Source]:
    """Expand files and directories (recursively, sorted) into readable sources.

    A named file of an unknown type is an error; inside a directory, files of other
    types (e.g. `_SUCCESS`, `.crc`) are skipped, as Spark and Hive writers leave them.
    """
    out: list[Source] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [Source(p, fmt) for p in sorted(path.rglob("*"))
                     if p.is_file() and not p.name.startswith((".", "_"))
                     and (fmt := file_format(p)) is not None]
            if not found:
                raise InputError("directory holds no .parquet, .jsonl(.gz) or .csv files",
                                 file=str(path))
            out.extend(found)
        elif path.is_file():
            fmt = file_format(path)
            if fmt is None:
                raise InputError("unknown file type (expected .parquet, .jsonl, .jsonl.gz or .csv)",
                                 file=str(path))
            out.append(Source(path, fmt))
        else:
            raise InputError("no such file or directory", file=str(path))
    return out
