"""Apache Spark engine: the same detection pipeline on a Spark cluster (or `local[N]`).

`detect.run` is written against a small session interface (see `session.py`); this
module supplies a Spark-backed session with the same methods, a Spark-side contract
ingest (Parquet from local or object-store paths, typed and quarantined with the rules
of `distillguard.ingest`), and `run_detection_spark`, the Spark twin of
`pipeline.run_detection`. Nothing of the detection logic is repeated here.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlglot.expressions as sge
from ibis.backends.sql.compilers.pyspark import PySparkCompiler

from distillguard.contract import TABLES, Kind, Table
from distillguard.errors import InputError
from distillguard.ingest import IngestReport, TableReport
from distillguard.ingest.sources import discover
from distillguard.ingest.validate import IP_COLUMNS, IPV4_RE, IPV6_RE

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

SPARK_TYPE = {Kind.STRING: "string", Kind.TIMESTAMP: "timestamp", Kind.INT: "bigint",
              Kind.BOOL: "boolean", Kind.STRING_LIST: "array<string>"}
_PROBLEM = {Kind.TIMESTAMP: "unparseable timestamp", Kind.INT: "not an integer",
            Kind.BOOL: "not a boolean", Kind.STRING_LIST: "not a list of strings (JSON array)"}
_INTEGRAL = ("tinyint", "smallint", "int", "bigint")
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:/")
QUARANTINE_COLUMNS = ("table", "file", "row", "column", "reason")


def spark_session(master: str = "local[2]", cfg: dict[str, Any] | None = None,
                  app_name: str = "distillguard") -> SparkSession:
    """Get or create a SparkSession with the settings the pipeline assumes (UTC, Arrow).

    Python workers must run this interpreter: the system `python3` lacks pyarrow.
    """
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InputError("--engine spark needs the 'spark' extra: "
                         "pip install 'distillguard[spark]' (and Java 17)") from exc
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    sc = (cfg or {}).get("spark", {})
    builder = (SparkSession.builder.master(master).appName(app_name)
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", str(sc.get("shuffle_partitions", 8))))
    if master.startswith("local"):
        builder = builder.config("spark.ui.enabled", "false").config(
            "spark.driver.memory", str(sc.get("driver_memory", "4g")))
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


class _Compiler(PySparkCompiler):
    """Ibis' PySpark compiler, adjusted where Spark's SQL differs from DuckDB's.

    - `hash()`: Ibis types it int64 but compiles it to Spark's 32-bit Murmur3 `hash`, so
      int64 arithmetic on it runs in 32 bits and overflows (the MinHash of
      `signals/text.py`); Spark's 64-bit `xxhash64` matches the declared type. Values
      still differ from DuckDB's `hash()`: `engine.portable.stable_hash` is the same on
      both.
    - `epoch_seconds()`: DuckDB's `epoch()` keeps the fraction of a second, Spark's
      `unix_timestamp` drops it (gaps between requests differ).
    - float -> integer casts: DuckDB rounds half to even, Spark truncates (time buckets
      differ); `bround` rounds as DuckDB does.
    """

    SIMPLE_OPS: ClassVar = {**PySparkCompiler.SIMPLE_OPS, ops.Hash: "xxhash64"}

    def visit_ExtractEpochSeconds(self, op: ops.ExtractEpochSeconds, *,
                                  arg: sge.Expression) -> sge.Expression:
        micros = self.f.unix_micros(self.cast(arg, dt.timestamp))
        return sge.Div(this=micros, expression=sge.convert(1_000_000.0))

    def visit_Cast(self, op: ops.Cast, *, arg: sge.Expression, to: dt.DataType
                   ) -> sge.Expression:
        source = op.arg.dtype
        if to.is_integer() and (source.is_floating() or isinstance(op.arg,
                                                                    ops.ExtractEpochSeconds)):
            return self.cast(self.f.bround(arg), to)
        return super().visit_Cast(op, arg=arg, to=to)


class SparkEngineSession:
    """Ibis over a SparkSession: the same methods as `DuckDBSession`.

    Materialised intermediates are cached Spark DataFrames registered as temp views;
    replacing one releases the previous cache.
    """

    dialect = "pyspark"

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.ibis = ibis.pyspark.connect(spark)
        self.ibis.compiler = _Compiler()
        self._cached: dict[str, DataFrame] = {}

    def table(self, name: str) -> ir.Table:
        return self.ibis.table(name)

    def dataframe(self, expr: ir.Table) -> DataFrame:
        """The Spark DataFrame of an expression (UDFs and in-memory tables registered)."""
        self.ibis._run_pre_execute_hooks(expr)
        return self.spark.sql(self.ibis.compile(expr))

    def materialize(self, name: str, expr: ir.Table) -> ir.Table:
        from pyspark import StorageLevel

        df = self.dataframe(expr).persist(StorageLevel.MEMORY_AND_DISK)
        df.count()  # compute it once, here, so later stages read the cache
        df.createOrReplaceTempView(name)
        old = self._cached.pop(name, None)
        if old is not None:
            old.unpersist()
        self._cached[name] = df
        return self.ibis.table(name)

    def arrow(self, expr: ir.Table) -> pa.Table:
        return self.ibis.to_pyarrow(expr)

    def pandas(self, expr: ir.Table) -> pd.DataFrame:
        return self.arrow(expr).to_pandas()

    def register(self, name: str, df: pd.DataFrame) -> ir.Table:
        return self.materialize(name, ibis.memtable(df))


def _q(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _lit(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def typed_expr(kind: Kind, col: str, stored: str) -> str:
    """Spark SQL turning a stored column into its contract type; NULL where it cannot be
    read (the rules of `ingest.validate.typed_expr`: numbers as timestamps are epoch ms,
    integral floats are integers, JSON arrays in strings are lists)."""
    text = col if stored == "string" else f"CAST({col} AS STRING)"
    if kind is Kind.STRING:
        return text
    if kind is Kind.TIMESTAMP:
        if stored.startswith("timestamp") or stored == "date":
            return f"CAST({col} AS TIMESTAMP)"
        if stored in _INTEGRAL or stored in ("float", "double") or stored.startswith("decimal"):
            return f"timestamp_millis(try_cast({col} AS BIGINT))"
        return (f"CASE WHEN trim({text}) RLIKE '^-?[0-9]{{1,15}}$' "
                f"THEN timestamp_millis(CAST(trim({text}) AS BIGINT)) "
                f"ELSE try_cast(trim({text}) AS TIMESTAMP) END")
    if kind is Kind.INT:
        if stored in ("float", "double") or stored.startswith("decimal"):
            return f"CASE WHEN {col} = floor({col}) THEN try_cast({col} AS BIGINT) END"
        if stored in ("string", "binary"):
            return (f"CASE WHEN trim({text}) RLIKE '^[+-]?[0-9]+([.]0*)?$' THEN "
                    f"try_cast(regexp_replace(trim({text}), '[.]0*$', '') AS BIGINT) END")
        return f"try_cast({col} AS BIGINT)"
    if kind is Kind.BOOL:
        if stored == "boolean":
            return col
        if stored in ("string", "binary"):
            return f"try_cast(lower(trim({text})) AS BOOLEAN)"
        return f"try_cast({col} AS BOOLEAN)"
    if stored.startswith("array"):
        return f"CAST({col} AS ARRAY<STRING>)"
    return (f"CASE WHEN trim({text}) = '' THEN NULL "
            f"ELSE from_json({text}, 'array<string>') END")


def _checks(table: Table, stored: dict[str, str], max_prompt_bytes: int
            ) -> list[tuple[str, str, str]]:
    """(condition, column, reason) row rules, most basic first, as `ingest.validate.checks`.
    Conditions see the stored value as `__raw_<col>` and the typed one as `<col>`."""
    out: list[tuple[str, str, str]] = []
    for col in table.columns:
        st = stored.get(col.name)
        if st is None:
            continue
        src, typed = _q(f"__raw_{col.name}"), _q(col.name)
        text = src if st == "string" else f"CAST({src} AS STRING)"
        is_text = st in ("string", "binary")
        if col.required and col.name != "prompt":
            blank = f" OR trim({text}) = ''" if is_text else ""
            out.append((f"{src} IS NULL{blank}", col.name, f"missing {col.name}"))
        if col.kind is not Kind.STRING:
            blank = f" AND trim({text}) <> ''" if is_text else ""
            out.append((f"{src} IS NOT NULL{blank} AND {typed} IS NULL", col.name,
                        _PROBLEM[col.kind]))
    for ip in IP_COLUMNS:
        if ip in stored:
            out.append((f"{_q(ip)} IS NOT NULL AND trim({_q(ip)}) <> '' AND NOT trim({_q(ip)}) "
                        f"RLIKE {_lit(f'^({IPV4_RE}|{IPV6_RE})$')}", ip, "invalid IP address"))
    if "prompt" in stored:
        out.append((f"octet_length(prompt) > {int(max_prompt_bytes)}", "prompt",
                    f"prompt larger than {int(max_prompt_bytes)} bytes"))
    return out


def _locations(paths: list[Path | str]) -> list[str]:
    """Local files and folders expanded (and checked) as the DuckDB ingest does; object-store
    URIs (s3a://, gs://, abfss://, hdfs://, dbfs:/) are handed to Spark as they are."""
    out: list[str] = []
    local: list[Path] = []
    for p in paths:
        if _URI.match(str(p)) and not str(p).startswith("file:"):
            out.append(str(p))
        else:
            local.append(Path(str(p).removeprefix("file:")))
    for src in discover(local) if local else []:
        if src.fmt != "parquet":
            raise InputError("--engine spark reads Parquet only (convert JSONL/CSV first with "
                             "`distillguard ingest`)", file=str(src.path))
        out.append(str(src.path.resolve()))
    return out


class SparkIngest:
    """Contract views `exchanges`, `accounts`, `releases` and `quarantine` in a SparkSession."""

    def __init__(self, spark: SparkSession, max_prompt_bytes: int) -> None:
        self.spark = spark
        self.max_prompt_bytes = max_prompt_bytes
        self.quarantines: list[DataFrame] = []

    def _empty(self, table: Table) -> None:
        cols = ", ".join(f"CAST(NULL AS {SPARK_TYPE[c.kind]}) AS {_q(c.name)}"
                         for c in table.columns)
        self.spark.sql(f"SELECT {cols} WHERE false").createOrReplaceTempView(table.name)

    def load(self, table: Table, paths: list[Path | str]) -> TableReport:
        from pyspark.sql import functions as F

        files = _locations(paths)
        raw = self.spark.read.option("mergeSchema", "true").parquet(*files)
        stored = {f.name: f.dataType.simpleString() for f in raw.schema.fields
                  if f.name in table.names}
        raw = raw.select(*[F.col(_q(c)) for c in stored],
                         F.regexp_replace("_metadata.file_path", "^file:", "").alias("_file"),
                         F.col("_metadata.row_index").alias("_row"))
        view = f"_raw_{table.name}"
        raw.createOrReplaceTempView(view)
        inner = ["_file", "_row"] + [f"{_q(c)} AS {_q('__raw_' + c)}" for c in stored]
        inner += [(typed_expr(c.kind, _q(c.name), stored[c.name]) if c.name in stored
                   else "NULL") + f" AS {_q(c.name)}" for c in table.columns]
        rules = _checks(table, stored, self.max_prompt_bytes)
        column = " ".join(f"WHEN {cond} THEN {_lit(col)}" for cond, col, _ in rules)
        reason = " ".join(f"WHEN {cond} THEN {_lit(r)}" for cond, _, r in rules)
        typed = ", ".join(f"CAST({_q(c.name)} AS {SPARK_TYPE[c.kind]}) AS {_q(c.name)}"
                          for c in table.columns)
        checked = self.spark.sql(f"""
            SELECT _file, _row,
                   {f'CASE {column} END' if rules else 'CAST(NULL AS STRING)'} AS _column,
                   {f'CASE {reason} END' if rules else 'CAST(NULL AS STRING)'} AS _reason,
                   {typed}
            FROM (SELECT {", ".join(inner)} FROM {view})""")
        checked.createOrReplaceTempView(f"_checked_{table.name}")
        bad = checked.filter("_reason IS NOT NULL").select(
            F.lit(table.name).alias("table"), F.col("_file").alias("file"),
            F.col("_row").alias("row"), F.col("_column").alias("column"),
            F.col("_reason").alias("reason"))
        good = checked.filter("_reason IS NULL")
        counts = checked.agg(F.count(F.lit(1)).alias("n"), F.count("_reason").alias("bad"))
        read, quarantined = counts.first()
        if table.key:
            good, dups, n_dup = self._dedupe(table, good)
            bad = bad.unionByName(dups)
            quarantined += n_dup
        good.select(*[_q(c) for c in table.names]).createOrReplaceTempView(table.name)
        self.quarantines.append(bad)
        return TableReport(table.name, files=files, rows_read=read,
                           rows_accepted=read - quarantined, rows_quarantined=quarantined,
                           columns_present=[c for c in table.names if c in stored])

    def _dedupe(self, table: Table, good: DataFrame) -> tuple[DataFrame, DataFrame, int]:
        """Keep the first row (file, row order) of each key; quarantine the others. Only the
        small (key, first, n) table of duplicated keys is shuffled back (broadcast)."""
        from pyspark.sql import functions as F

        key = table.key
        assert key is not None
        dup = (good.groupBy(key).agg(F.min(F.struct("_file", "_row")).alias("_first"),
                                     F.count(F.lit(1)).alias("_n"))
               .filter("_n > 1").withColumnRenamed(key, "_k").persist())
        n_dup = int(dup.agg(F.sum(F.col("_n") - 1)).first()[0] or 0)
        joined = good.join(F.broadcast(dup), good[key] == dup["_k"], "left")
        is_first = (F.col("_k").isNull() | ((F.col("_file") == F.col("_first._file"))
                                            & (F.col("_row") == F.col("_first._row"))))
        keep = joined.filter(is_first).drop("_k", "_first", "_n")
        dups = joined.filter(~is_first).select(
            F.lit(table.name).alias("table"), F.col("_file").alias("file"),
            F.col("_row").alias("row"), F.lit(key).alias("column"),
            F.concat(F.lit(f"duplicate {key} (first at file "), F.col("_first._file"),
                     F.lit(" row "), F.col("_first._row").cast("string"),
                     F.lit(")")).alias("reason"))
        return keep, dups, n_dup

    def quarantine(self) -> DataFrame:
        """All quarantined rows (possibly none), as the `quarantine` view."""
        schema = "`table` STRING, file STRING, `row` BIGINT, `column` STRING, reason STRING"
        q = self.spark.createDataFrame([], schema)
        for part in self.quarantines:
            q = q.unionByName(part)
        q.createOrReplaceTempView("quarantine")
        return q


def load_inputs_spark(spark: SparkSession, *, exchanges: list[Path | str],
                      accounts: list[Path | str] | None = None,
                      releases: list[Path | str] | None = None,
                      max_prompt_bytes: int = 1_000_000) -> IngestReport:
    """Register contract-typed views and the quarantine in `spark`; the report has the
    same shape as the DuckDB ingest's (read = accepted + quarantined per table)."""
    ing = SparkIngest(spark, max_prompt_bytes)
    reports: dict[str, TableReport] = {}
    for name, paths in (("exchanges", exchanges), ("accounts", accounts),
                        ("releases", releases)):
        if paths:
            reports[name] = ing.load(TABLES[name], list(paths))
        else:
            ing._empty(TABLES[name])
    q = ing.quarantine()
    counts = q.groupBy("table", "column", "reason").count().toPandas()
    counts = counts.sort_values(["count", "table", "column", "reason"],
                                ascending=[False, True, True, True])
    reasons = [(t, c, r, int(n)) for t, c, r, n in counts.itertuples(index=False)]
    return IngestReport(reports, reasons)


def write_quarantine_spark(spark: SparkSession, path: Path) -> None:
    """The quarantine (small by nature) as one Parquet file, in file and row order, with the
    DuckDB run's schema."""
    path.parent.mkdir(parents=True, exist_ok=True)
    df = spark.table("quarantine").orderBy("table", "file", "row")
    schema = pa.schema([("table", pa.string()), ("file", pa.string()), ("row", pa.int64()),
                        ("column", pa.string()), ("reason", pa.string())])
    pq.write_table(pa.Table.from_pandas(df.toPandas(), schema=schema, preserve_index=False),
                   path)


def run_detection_spark(exchanges: list[Path | str], out: Path, cfg: dict[str, Any], *,
                        accounts: list[Path | str] | None = None,
                        releases: list[Path | str] | None = None, master: str = "local[2]",
                        spark: SparkSession | None = None,
                        progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """`pipeline.run_detection` on Spark: same pipeline, same run directory, engine=spark.

    Pass `spark` to reuse a session (tests, notebooks, Databricks); otherwise one is
    created for `master` and left running (Spark sessions are per-process singletons).
    """
    from distillguard.pipeline import detect_and_write

    progress("starting spark")
    spark = spark or spark_session(master, cfg)
    progress("validating inputs")
    ingest = load_inputs_spark(spark, exchanges=exchanges, accounts=accounts, releases=releases,
                               max_prompt_bytes=cfg["ingest"]["max_prompt_bytes"])
    result = detect_and_write(SparkEngineSession(spark), ingest, exchanges, out, cfg,
                              accounts=accounts, releases=releases, engine="spark",
                              progress=progress)
    write_quarantine_spark(spark, out / "quarantine.parquet")
    return result
