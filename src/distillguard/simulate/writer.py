"""Streaming Parquet output: one part per generated day, so memory stays bounded.

Options are fixed (codec, row-group size, no wall-clock metadata) so that the same
scenario, seed and scale always give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROW_GROUP = 262_144


def write_table(table: pa.Table, path: Path) -> None:
    """Write one deterministic Parquet file."""
    pq.write_table(table, path, compression="zstd", row_group_size=ROW_GROUP,
                   use_dictionary=True, write_statistics=True)


class PartWriter:
    """Writes `DIR/part-NNNNN.parquet` files in order; stale parts of an earlier run are removed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("part-*.parquet"):
            stale.unlink()
        self.parts = 0

    def write(self, table: pa.Table) -> Path:
        path = self.directory / f"part-{self.parts:05d}.parquet"
        write_table(table, path)
        self.parts += 1
        return path
