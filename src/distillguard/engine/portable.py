"""A hash that gives the same value on DuckDB and on Spark.

Ibis' `hash()` compiles to each engine's own function (DuckDB's 64-bit `hash`, Spark's
32-bit Murmur3 `hash`, or `xxhash64` in our Spark session), so template ids, MinHash
minima and LSH band keys differ between engines, and with them the account graph.
`stable_hash` is the first 60 bits of the MD5 of the text, computed natively by both
engines (no Python UDF): same input, same int64, on every engine and every run.

It costs about 10x DuckDB's `hash()` per call (docs/scale.md), so it is the right
choice where results must match across engines, e.g. the MinHash word hashes.
"""

from __future__ import annotations

import ibis.expr.datatypes as dt
import ibis.expr.operations as ops
import ibis.expr.types as ir
import sqlglot as sg
import sqlglot.expressions as sge
from ibis.backends.sql.compilers.duckdb import DuckDBCompiler
from ibis.backends.sql.compilers.pyspark import PySparkCompiler
from ibis.common.annotations import attribute

HEX_DIGITS = 15  # 60 bits: always a non-negative BIGINT


class StableHash(ops.Value):
    """First 60 bits of MD5(arg) as a non-negative int64."""

    arg: ops.Value[dt.String]

    dtype = dt.int64

    @attribute
    def shape(self):
        return self.arg.shape


def stable_hash(value: ir.StringValue) -> ir.IntegerValue:
    """Engine-independent 60-bit hash of a string (NULL stays NULL)."""
    return StableHash(value).to_expr()


def _hex_prefix(compiler, arg: sge.Expression) -> sge.Expression:
    return compiler.f.substr(compiler.f.md5(arg), 1, HEX_DIGITS)


def _duckdb(self: DuckDBCompiler, op: StableHash, *, arg: sge.Expression) -> sge.Expression:
    # DuckDB casts a '0x...' string to an integer.
    text = sge.DPipe(this=sge.convert("0x"), expression=_hex_prefix(self, arg))
    return sg.cast(text, to=sge.DataType.Type.BIGINT)


def _spark(self: PySparkCompiler, op: StableHash, *, arg: sge.Expression) -> sge.Expression:
    return sg.cast(self.f.conv(_hex_prefix(self, arg), 16, 10), to=sge.DataType.Type.BIGINT)


# New op, new compile rules: nothing that ibis already compiles changes.
DuckDBCompiler.visit_StableHash = _duckdb
PySparkCompiler.visit_StableHash = _spark
