"""Errors a user can act on. The CLI prints them as one line and exits 2 (detect-secrets style)."""

from __future__ import annotations


class InputError(Exception):
    """Bad input that stops a run: names the file and, where known, the row and column."""

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None,
                 row: int | None = None) -> None:
        self.file, self.column, self.row = file, column, row
        where = ", ".join(
            part for part in (
                f"file {file}" if file else "",
                f"row {row}" if row is not None else "",
                f"column {column!r}" if column else "",
            ) if part
        )
        super().__init__(f"{where}: {message}" if where else message)
