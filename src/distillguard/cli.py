"""The `distillguard` command line. Thin: parse options, call one function, print.

Exit codes scripts can trust: 0 ok / nothing found, 1 findings (detect flagged accounts),
2 bad input or usage (one line naming file, row and column; never a traceback),
3 an internal error (one line; DISTILLGUARD_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from distillguard.errors import InputError

app = typer.Typer(
    name="distillguard",
    help="Detect, attribute and counter distillation attacks in LLM API traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn an InputError into one clear line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if os.environ.get("DISTILLGUARD_DEBUG"):
                raise
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {exc} "
                              "(set DISTILLGUARD_DEBUG=1 for the traceback)",
                              highlight=False, soft_wrap=True)
            raise typer.Exit(code=3) from None

    return wrapper  # type: ignore[return-value]


@app.command("eval")
@guarded
def eval_(
    truth: Path = typer.Option(..., "--truth", help="truth.parquet written by the simulator."),
    pred: Path | None = typer.Option(
        None, "--pred", help="Detection run directory (accounts.parquet + campaigns.json); "
        "omit to score only the baselines."),
    exchanges: list[Path] | None = typer.Option(
        None, "--exchanges", help="Exchanges file or directory (repeatable); enables the "
        "baselines and exchange-count errors."),
    accounts: list[Path] | None = typer.Option(
        None, "--accounts", help="Accounts file or directory: allowlisted accounts count "
        "as negatives."),
    json_out: Path | None = typer.Option(None, "--json", help="Write all metrics as JSON."),
    config_path: Path | None = typer.Option(None, "--config", help="Configuration TOML."),
) -> None:
    """Score a detection run against truth, side by side with two naive baselines."""
    import json

    from distillguard import config
    from distillguard.evaluate import evaluate_run, render_table

    result = evaluate_run(truth, pred, exchanges=exchanges, accounts=accounts,
                          cfg=config.load(config_path))
    console.print(render_table(result))
    for note in result["notes"]:
        console.print(f"[dim]note: {note}[/]")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"metrics written to {json_out}")


# --- ingest ------------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

from rich.table import Table as RichTable  # noqa: E402

from distillguard import config as config_mod  # noqa: E402
from distillguard.engine.duckdb_engine import connect  # noqa: E402
from distillguard.ingest import IngestReport, load_inputs, persist, write_quarantine  # noqa: E402

ConfigOpt = typer.Option(None, "--config", help="TOML file overriding default.toml keys.")


def _print_ingest(report: IngestReport, quarantine_path: Path | None) -> None:
    table = RichTable(title="Ingest summary")
    for col in ("table", "files", "rows read", "accepted", "quarantined"):
        table.add_column(col, justify="right" if col != "table" else "left")
    for rep in report.tables.values():
        table.add_row(rep.table, str(len(rep.files)), f"{rep.rows_read:,}",
                      f"{rep.rows_accepted:,}", f"{rep.rows_quarantined:,}")
    console.print(table)
    if report.reasons:
        reasons = RichTable(title="Quarantine reasons")
        for col in ("table", "column", "reason", "rows"):
            reasons.add_column(col)
        for t, c, r, n in report.reasons[:20]:
            reasons.add_row(t, c, r, f"{n:,}")
        console.print(reasons)
    console.print(f"rows read {report.rows_read:,} = accepted "
                  f"{report.rows_read - report.rows_quarantined:,} + quarantined "
                  f"{report.rows_quarantined:,}")
    if quarantine_path is not None:
        console.print(f"quarantine: {quarantine_path}")


def _ingest(exchanges: list[Path], accounts: list[Path] | None, releases: list[Path] | None,
            config: Path | None, database: str = ":memory:"):
    cfg = config_mod.load(config)
    con = connect(database)
    report = load_inputs(con, exchanges=exchanges, accounts=accounts, releases=releases,
                         max_prompt_bytes=cfg["ingest"]["max_prompt_bytes"],
                         batch_rows=cfg["ingest"]["batch_rows"])
    return con, report


@app.command()
@guarded
def validate(
    exchanges: list[Path] = typer.Argument(..., help="Exchanges file(s) or directory."),
    accounts: list[Path] = typer.Option(None, "--accounts", help="Accounts file or directory."),
    releases: list[Path] = typer.Option(None, "--releases", help="Releases file or directory."),
    quarantine: Path = typer.Option(Path("quarantine.parquet"), help="Where bad rows go."),
    config: Path = ConfigOpt,
) -> None:
    """Check files against the log contract; bad rows go to the quarantine file.

    Exit code 0 when every row is good, 1 when rows were quarantined, 2 on a bad file.
    """
    con, report = _ingest(exchanges, accounts or None, releases or None, config)
    write_quarantine(con, quarantine)
    _print_ingest(report, quarantine)
    if report.rows_quarantined:
        raise typer.Exit(code=1)


@app.command()
@guarded
def ingest(
    exchanges: list[Path] = typer.Argument(..., help="Exchanges file(s) or directory."),
    accounts: list[Path] = typer.Option(None, "--accounts", help="Accounts file or directory."),
    releases: list[Path] = typer.Option(None, "--releases", help="Releases file or directory."),
    db: Path = typer.Option(Path("distillguard.duckdb"), help="DuckDB database file to write."),
    config: Path = ConfigOpt,
) -> None:
    """Validate the files and load the accepted rows (and the quarantine) into a DuckDB file."""
    con, report = _ingest(exchanges, accounts or None, releases or None, config)
    persist(con, db)
    _print_ingest(report, None)
    console.print(f"database: {db}")
