"""An engine session: run Ibis expressions, materialise intermediates, fetch small results.

The detection pipeline is written once against this interface; the DuckDB session is
the embedded default. (Ibis' own `create_table`/`drop_table` trip over duckdb 2.0's
parser, so materialisation compiles the expression and issues plain DDL.)
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa


class DuckDBSession:
    """Ibis over an existing DuckDB connection (the one the ingest registered views in)."""

    dialect = "duckdb"

    def __init__(self, con) -> None:
        self.con = con
        self.ibis = ibis.duckdb.from_connection(con)

    def table(self, name: str) -> ir.Table:
        return self.ibis.table(name)

    def materialize(self, name: str, expr: ir.Table) -> ir.Table:
        sql = ibis.to_sql(expr, dialect=self.dialect)
        self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{name}" AS {sql}')
        return self.ibis.table(name)

    def arrow(self, expr: ir.Table) -> pa.Table:
        return self.con.sql(str(ibis.to_sql(expr, dialect=self.dialect))).to_arrow_table()

    def pandas(self, expr: ir.Table) -> pd.DataFrame:
        return self.arrow(expr).to_pandas()

    def register(self, name: str, df: pd.DataFrame) -> ir.Table:
        self.con.register(f"_{name}_df", pa.Table.from_pandas(df, preserve_index=False))
        self.con.execute(f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT * FROM "_{name}_df"')
        self.con.unregister(f"_{name}_df")
        return self.ibis.table(name)
