"""The `distillguard` command line. Thin: parse options, call one function, print.

Exit codes scripts can trust: 0 ok / nothing found, 1 findings (detect flagged accounts),
2 bad input or usage (one line naming file, row and column; never a traceback),
3 an internal error, or the engine out of memory or disk (one line; DISTILLGUARD_DEBUG=1
shows the traceback).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb
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


def _engine_limit(exc: Exception) -> tuple[str, str] | None:
    """(what ran out, what to do) when the engine stopped at a limit of this machine, not
    at a fault of ours."""
    if isinstance(exc, duckdb.OutOfMemoryException):
        return "out of memory", "raise \\[engine] memory_limit in a --config file"
    if isinstance(exc, duckdb.IOException) and "No space left on device" in str(exc):
        return ("out of disk space", "DuckDB writes what exceeds \\[engine] memory_limit to "
                f"{spill_directory()}: free space there or set TMPDIR to a larger disk")
    return None


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
            limit = _engine_limit(exc)
            if limit:
                err_console.print(f"[bold red]{limit[0]}:[/] {str(exc).splitlines()[0]} — "
                                  f"{limit[1]} (docs/scale.md, sizing notes)",
                                  highlight=False, soft_wrap=True)
                raise typer.Exit(code=3) from None
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

    with console.status("evaluating") as status:
        result = evaluate_run(truth, pred, exchanges=exchanges, accounts=accounts,
                              cfg=config.load(config_path),
                              progress=lambda step: status.update(f"evaluating: {step}"))
    console.print(render_table(result))
    for note in result["notes"]:
        console.print(f"[dim]note: {note}[/]")
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"metrics written to {json_out}")


# --- ingest ------------------------------------------------------------------------------
from rich.table import Table as RichTable  # noqa: E402

from distillguard import config as config_mod  # noqa: E402
from distillguard.engine.duckdb_engine import connect, spill_directory  # noqa: E402
from distillguard.ingest import (  # noqa: E402
    IngestReport,
    load_configured,
    persist,
    write_quarantine,
)

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


FormatOpt = typer.Option("contract", "--format",
                         help="Input format: contract, otel, litellm, openai-jsonl, "
                              "anthropic-jsonl (see docs/adapters.md).")
AccountAttrOpt = typer.Option(None, "--account-attribute",
                              help="Field naming the account in a provider log format.")
DsnOpt = typer.Option(None, "--dsn", help="litellm: read LiteLLM_SpendLogs from PostgreSQL.")


def _ingest(exchanges: list[Path], accounts: list[Path] | None, releases: list[Path] | None,
            config: Path | None, fmt: str, account_attribute: str | None, dsn: str | None):
    cfg = config_mod.load(config)
    con = connect()
    report = load_configured(con, cfg, exchanges=exchanges, accounts=accounts,
                             releases=releases, fmt=fmt, account_attribute=account_attribute,
                             dsn=dsn)
    return con, report


@app.command()
@guarded
def validate(
    exchanges: list[Path] = typer.Argument(..., help="Exchanges file(s) or directory."),
    accounts: list[Path] = typer.Option(None, "--accounts", help="Accounts file or directory."),
    releases: list[Path] = typer.Option(None, "--releases", help="Releases file or directory."),
    quarantine: Path = typer.Option(Path("quarantine.parquet"), help="Where bad rows go."),
    config: Path = ConfigOpt,
    fmt: str = FormatOpt,
    account_attribute: str = AccountAttrOpt,
    dsn: str = DsnOpt,
) -> None:
    """Check files against the log contract; bad rows go to the quarantine file.

    Exit code 0 when every row is good, 1 when rows were quarantined, 2 on a bad file.
    """
    con, report = _ingest(exchanges, accounts or None, releases or None, config, fmt,
                          account_attribute, dsn)
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
    fmt: str = FormatOpt,
    account_attribute: str = AccountAttrOpt,
    dsn: str = DsnOpt,
) -> None:
    """Validate the files and load the accepted rows (and the quarantine) into a DuckDB file."""
    con, report = _ingest(exchanges, accounts or None, releases or None, config, fmt,
                          account_attribute, dsn)
    persist(con, db)
    _print_ingest(report, None)
    console.print(f"database: {db}")


@app.command()
@guarded
def report(
    run_dir: Path = typer.Argument(..., help="Run directory written by `detect --out`."),
    out: Path | None = typer.Option(None, "--out", help="Where to write (default: RUN_DIR)."),
    redact: bool = typer.Option(
        False, "--redact", help="Keyed-hash IPs, e-mail domains and payment fingerprints."),
    redact_key_file: Path | None = typer.Option(
        None, "--redact-key-file",
        help="File holding the HMAC key (else $DISTILLGUARD_REDACT_KEY)."),
    config: Path = ConfigOpt,
) -> None:
    """Write report.html, campaigns.md, indicators.stix.json and enforcement.csv."""
    # Imported here: matplotlib and stix2 would slow every other command's start.
    from distillguard.outputs.redact import load_key
    from distillguard.outputs.report import write_all

    key = load_key(redact_key_file) if redact or redact_key_file else None
    with console.status("reading the run directory") as status:
        paths = write_all(run_dir, out, redact_key=key, cfg=config_mod.load(config),
                          progress=status.update)
    table = RichTable("output", "file", "bytes", title="distillguard report"
                      + (" (redacted)" if key else ""))
    for name, path in paths.items():
        table.add_row(name, str(path), f"{path.stat().st_size:,}")
    console.print(table)


@app.command()
@guarded
def simulate(
    scenario: str = typer.Option("small", "--scenario",
                                 help="small | evasive | alibaba-scale (see docs/simulator.md)."),
    seed: int = typer.Option(0, "--seed", help="Same scenario, seed and scale: same bytes."),
    scale: float = typer.Option(1.0, "--scale", help="Multiplies account counts and volume."),
    out: Path = typer.Option(..., "--out", help="Directory to write the contract files into."),
    prompts_dir: Path = typer.Option(
        None, "--prompts", help="Folder of real prompts (*.jsonl: text, kind, category) to "
                                "draw text from instead of the grammar (docs/simulator.md)."),
) -> None:
    """Write synthetic traffic logs with ground truth (exchanges/, accounts, releases, truth)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from distillguard.simulate import generate

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                  transient=True) as bar:
        task = bar.add_task(f"simulating {scenario} (days)", total=None)
        summary = generate(scenario, seed, scale, out,
                           progress=lambda done, total: bar.update(task, completed=done,
                                                                   total=total),
                           prompts_dir=prompts_dir)
    table = RichTable("population", "operator", "accounts", "exchanges",
                      title=f"distillguard simulate {scenario} (seed {seed}, scale {scale:g})")
    for name, row in summary["by_population"].items():
        table.add_row(name, row["operator"] or "-", f"{row['accounts']:,}",
                      f"{row['exchanges']:,}")
    table.add_row("[bold]total", "", f"{summary['accounts']:,}", f"{summary['exchanges']:,}")
    console.print(table)
    console.print(f"attacking: {summary['attacking_accounts']:,} accounts, "
                  f"{summary['attacking_exchanges']:,} exchanges; {summary['parts']} parts "
                  f"in {out / 'exchanges'}; {summary['seconds']} s")


@app.command()
@guarded
def convert(
    paths: list[Path] = typer.Argument(None, help="Log files or directories (none with --dsn)."),
    fmt: str = typer.Option(..., "--format",
                            help="otel | litellm | openai-jsonl | anthropic-jsonl "
                                 "(mappings: docs/adapters.md)."),
    out: Path = typer.Option(..., "--out", help="Contract exchanges Parquet file to write."),
    account_attribute: str = typer.Option(
        None, "--account-attribute",
        help="Field naming the billing account (required for otel, e.g. tenant.id)."),
    dsn: str = typer.Option(None, "--dsn", help="litellm: read the PostgreSQL table "
                                                "(read-only) instead of files."),
    table: str = typer.Option("LiteLLM_SpendLogs", "--table", help="litellm: table with --dsn."),
    workers: int = typer.Option(1, "--workers", help="Processes decoding records in parallel."),
) -> None:
    """Convert provider logs (OTel GenAI, LiteLLM, OpenAI/Anthropic) to contract Parquet."""
    from distillguard.ingest.adapters import AdapterOptions, to_contract_parquet

    options = AdapterOptions(account_attribute=account_attribute, dsn=dsn, table=table,
                             workers=workers)
    with console.status(f"converting {fmt} logs"):
        done = to_contract_parquet(fmt, list(paths or []), options, out)
    console.print(f"{done.rows:,} exchanges written to {out}")
    if done.rows_without_prompt:
        console.print(f"{done.rows_without_prompt:,} exchanges carry no prompt text (the source "
                      "does not store it): text signals will be skipped for them")


# `distillguard provenance ...` (docs/provenance.md); torch/transformers load lazily inside.
from distillguard.provenance.commands import provenance_app  # noqa: E402

app.add_typer(provenance_app, name="provenance")


# --- detect ------------------------------------------------------------------------------
@app.command()
@guarded
def detect(
    exchanges: list[Path] = typer.Option(..., "--exchanges", help="Exchanges file(s)/directory."),
    out: Path = typer.Option(..., "--out", help="Run directory to write."),
    accounts: list[Path] = typer.Option(None, "--accounts", help="Accounts file or directory."),
    releases: list[Path] = typer.Option(None, "--releases", help="Releases file or directory."),
    config: Path = ConfigOpt,
    fmt: str = FormatOpt,
    account_attribute: str = AccountAttrOpt,
    dsn: str = DsnOpt,
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (embedded) or spark."),
    spark_master: str = typer.Option("local[2]", "--spark-master",
                                     help="Spark master URL for --engine spark."),
    exit_zero: bool = typer.Option(False, "--exit-zero",
                                   help="Exit 0 even when accounts are flagged."),
) -> None:
    """Detect distillation campaigns: signals -> accounts -> linking -> campaigns.

    Writes accounts.parquet and campaigns.json (the contract) plus evidence files into
    --out. Exit code 1 when accounts were flagged (0 with --exit-zero), 2 on bad input.
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    cfg = config_mod.load(config)
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("detect", total=None)

        def step(name: str) -> None:
            bar.update(task, description=name)

        kwargs = dict(accounts=accounts or None, releases=releases or None, progress=step)
        if engine == "duckdb":
            from distillguard.pipeline import run_detection

            result = run_detection(exchanges, out, cfg, fmt=fmt,
                                   account_attribute=account_attribute, dsn=dsn, **kwargs)
        elif engine == "spark":
            if fmt != "contract":
                raise InputError("--engine spark reads contract Parquet only; "
                                 "convert other formats first with `distillguard convert`")
            try:
                from distillguard.engine.spark_engine import run_detection_spark
            except ImportError as exc:
                raise InputError(f"the Spark engine is not available: {exc}") from None
            result = run_detection_spark(exchanges, out, cfg, master=spark_master, **kwargs)
        else:
            raise InputError(f"unknown engine {engine!r} (duckdb or spark)")
    _print_detection(result, out)
    if result["flagged"] and not exit_zero:
        raise typer.Exit(code=1)


def _print_detection(result: dict, out: Path) -> None:
    table = RichTable(title=f"{len(result['campaigns'])} campaign(s), "
                            f"{result['flagged']:,} of {result['accounts']:,} accounts flagged")
    for col in ("campaign", "score", "accounts", "exchanges", "top capability", "first seen",
                "last seen", "strongest signals"):
        table.add_column(col)
    for c in result["campaigns"]:
        top = max(c["capabilities"], key=c["capabilities"].get)
        table.add_row(c["campaign_id"], f"{c['score']:.2f}", f"{c['n_accounts']:,}",
                      f"{c['n_exchanges']:,}", f"{top} ({c['capabilities'][top]:.0%})",
                      c["first_seen"][:16], c["last_seen"][:16],
                      ", ".join(s["name"] for s in c["signals"][:3]))
    console.print(table)
    for name, why in sorted(result["skipped"].items()):
        console.print(f"[yellow]signal skipped:[/] {name}: {why}")
    if result["permitted"]:
        console.print(f"permitted distillation (allowlisted, never flagged): "
                      f"{len(result['permitted'])} account(s)")
    for org in result["organisations"]:
        console.print(f"organisation use (one customer in the open, not flagged; run.json): "
                      f"{org['org_id']}, {len(org['account_ids'])} account(s), score "
                      f"{org['score']:.2f}")
    ingest = result["ingest"]
    console.print(f"exchanges read {ingest.tables['exchanges'].rows_read:,}, quarantined "
                  f"{ingest.rows_quarantined:,}; outputs in {out}")


# --- serve / replay (docs/serve.md) -------------------------------------------------------
@app.command()
@guarded
def serve(
    db: Path = typer.Option(..., "--db", help="State database (DuckDB file; created if absent)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", help="TCP port."),
    token_file: Path = typer.Option(None, "--token-file",
                                    help="File holding the API token (else $DISTILLGUARD_TOKEN)."),
    config: Path = ConfigOpt,
) -> None:
    """Serve the online scoring API for gateways and the dashboard (token required)."""
    import uvicorn

    from distillguard.serve.app import create_app
    from distillguard.serve.auth import load_token

    token = load_token(token_file)
    app_ = create_app(db, token, config_mod.load(config))
    console.print(f"distillguard serve: state {db}, dashboard and API on http://{host}:{port}/")
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command()
@guarded
def replay(
    scenario_dir: Path = typer.Option(..., "--scenario-dir",
                                      help="Output of `distillguard simulate` (with truth)."),
    db: Path = typer.Option(None, "--db", help="Fresh state database to fill "
                                               "(default: a temporary one)."),
    batch_size: int = typer.Option(100, "--batch-size", help="Events per POST /v1/events."),
    hours: float = typer.Option(None, "--hours",
                                help="Replay only the scenario's first HOURS of simulated time."),
    out: Path = typer.Option(None, "--out", help="Also write the result as JSON here."),
    config: Path = ConfigOpt,
) -> None:
    """Replay a simulated scenario through the service in time order, as fast as possible;
    report per true operator the time and traffic until its first throttle/block."""
    import json
    import secrets
    import tempfile

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from distillguard.serve.replay import replay as run_replay

    with tempfile.TemporaryDirectory(prefix="distillguard-replay-") as tmp:
        state = db or Path(tmp) / "state.duckdb"
        with Progress(*Progress.get_default_columns()[:1], BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err_console, transient=True) as bar:
            task = bar.add_task("replaying exchanges", total=None)
            result = run_replay(scenario_dir, state, config_mod.load(config),
                                secrets.token_urlsafe(24), batch_size, hours,
                                lambda done, total: bar.update(task, completed=done, total=total))
    table = RichTable(title="Time to first throttle/block per true operator")
    for col in ("operator", "accounts", "acted", "exchanges", "hours", "before", "% before",
                "% served"):
        table.add_column(col, justify="left" if col == "operator" else "right")
    for r in result["operators"]:
        hours = "never" if r["hours_to_action"] is None else f"{r['hours_to_action']:.1f}"
        before = "" if r["exchanges_before_action"] is None else f"{r['exchanges_before_action']:,}"
        share = "" if r["share_before_action"] is None else f"{r['share_before_action']:.2%}"
        table.add_row(r["operator"], f"{r['accounts']:,}", f"{r['accounts_acted']:,}",
                      f"{r['exchanges']:,}", hours, before, share, f"{r['share_served']:.2%}")
    console.print(table)
    b = result["benign"]
    console.print(f"benign: {b['accounts_acted']:,} of {b['accounts']:,} accounts throttled or "
                  f"blocked ({b['account_fp_rate']:.2%}); {b['exchanges_acted']:,} of "
                  f"{b['exchanges']:,} exchanges after that ({b['exchange_fp_rate']:.2%})")
    if out:
        out.write_text(json.dumps(result, indent=2) + "\n")
