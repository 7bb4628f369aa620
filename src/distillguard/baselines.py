"""Two naive detectors computed from the exchanges alone: the bar the real detector must clear.

Both look at one account at a time and know nothing of campaigns, templates or linking:
- `volume`: flag accounts whose exchange count is above a high quantile of all accounts'.
- `iforest`: PyOD's IsolationForest over per-account aggregates, flagging a fixed share.

Aggregates are computed in DuckDB SQL over the `exchanges` table of a connection, so the
baselines run at the same scale as the detector (tens of millions of rows).
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

# Per-account aggregates fed to the IsolationForest, in column order.
FEATURES: tuple[str, ...] = (
    "n_exchanges",
    "active_days",
    "gap_mean_s",
    "gap_sd_s",
    "distinct_ips",
    "distinct_models",
    "input_tokens",
    "output_tokens",
    "tool_share",
    "image_share",
    "thinking_share",
    "hour_entropy",
)


def build_features(con: duckdb.DuckDBPyConnection, table: str = "baseline_features") -> None:
    """Create `table` with one row per account of `exchanges` and the FEATURES columns.

    The only pass over `exchanges` (a view that re-validates on every read); everything
    per account downstream, exchange counts included, reads this table. `exchanges` is
    the contract-typed view of `distillguard.ingest.load_inputs`; optional
    columns the logs lack are NULL there and give a constant 0 feature, which the forest
    never splits on, so the baseline degrades instead of failing.

    Inter-arrival gaps come from a window over each account's exchanges in time order, on
    the account and time columns alone: a window carrying every column ran out of memory
    at 37.8M exchanges (DuckDB 2.0 could not spill it). Tied timestamps give gaps of 0
    in any order, so the gaps need no tie-breaker. An account with a single exchange has
    no gap, so its mean gap is the whole log's time span (as idle as an account can
    look) and its gap deviation 0.
    """
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        WITH x AS MATERIALIZED (  -- the one scan of exchanges; no text columns
            SELECT account_id, ts, hour(ts) AS hr, ip, model, input_tokens, output_tokens,
                   len(tool_names) > 0 AS has_tools, has_image, thinking
            FROM exchanges
        ),
        gaps AS (
            SELECT account_id, avg(gap) AS gap_mean_s, coalesce(stddev_samp(gap), 0) AS gap_sd_s
            FROM (SELECT account_id,
                         epoch(ts) - epoch(lag(ts) OVER (PARTITION BY account_id ORDER BY ts))
                         AS gap
                  FROM x)
            GROUP BY account_id
        ),
        span AS (SELECT coalesce(epoch(max(ts)) - epoch(min(ts)), 0) AS s FROM x),
        hours AS (
            SELECT account_id, count(*) AS c,
                   sum(count(*)) OVER (PARTITION BY account_id) AS total
            FROM x GROUP BY account_id, hr
        ),
        entropy AS (
            SELECT account_id, -sum(c / total * ln(c / total)) AS hour_entropy
            FROM hours GROUP BY account_id
        ),
        agg AS (
            SELECT account_id,
                   count(*) AS n_exchanges,
                   count(DISTINCT CAST(ts AS DATE)) AS active_days,
                   count(DISTINCT ip) AS distinct_ips,
                   count(DISTINCT model) AS distinct_models,
                   coalesce(sum(input_tokens), 0) AS input_tokens,
                   coalesce(sum(output_tokens), 0) AS output_tokens,
                   avg(CASE WHEN has_tools THEN 1 ELSE 0 END) AS tool_share,
                   avg(CASE WHEN has_image THEN 1 ELSE 0 END) AS image_share,
                   avg(CASE WHEN thinking THEN 1 ELSE 0 END) AS thinking_share
            FROM x GROUP BY account_id
        )
        SELECT agg.account_id,
               agg.n_exchanges, agg.active_days,
               coalesce(gaps.gap_mean_s, span.s) AS gap_mean_s, gaps.gap_sd_s,
               agg.distinct_ips, agg.distinct_models, agg.input_tokens, agg.output_tokens,
               agg.tool_share, agg.image_share, agg.thinking_share, entropy.hour_entropy
        FROM agg JOIN entropy USING (account_id) JOIN gaps USING (account_id) CROSS JOIN span
        ORDER BY agg.account_id
    """)


def volume_threshold(con: duckdb.DuckDBPyConnection, quantile: float,
                     features: str = "baseline_features") -> pa.Table:
    """Flag accounts with strictly more exchanges than the `quantile` of exchanges per account.

    Returns account_id, n_exchanges, flagged. Strictly more, so a crowd of accounts tied
    at the quantile is not flagged wholesale.
    """
    return con.sql(f"""
        SELECT account_id, n_exchanges,
               n_exchanges > (SELECT quantile_cont(n_exchanges, ?) FROM {features}) AS flagged
        FROM {features} ORDER BY account_id
    """, params=[quantile]).to_arrow_table()


def isolation_forest(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any],
                     features: str = "baseline_features") -> pa.Table:
    """Flag the `contamination` share of accounts the forest finds easiest to isolate.

    Returns account_id, n_exchanges, flagged. Raw aggregates go in unscaled: a forest's
    random splits are uniform between each feature's min and max, so per-feature scaling
    would not change what it isolates.
    """
    from pyod.models.iforest import IForest  # heavy import, only when the baseline runs

    table = con.sql(
        f"SELECT account_id, {', '.join(FEATURES)} FROM {features} ORDER BY account_id"
    ).to_arrow_table()
    x = np.column_stack([table.column(f).to_numpy().astype(np.float64) for f in FEATURES])
    model = IForest(
        n_estimators=int(cfg["iforest_n_estimators"]),
        contamination=float(cfg["iforest_contamination"]),
        random_state=int(cfg["iforest_random_state"]),
        n_jobs=1,
    )
    model.fit(x)
    flagged = pa.array(np.asarray(model.labels_) == 1, type=pa.bool_())
    return pa.table({"account_id": table.column("account_id"),
                     "n_exchanges": table.column("n_exchanges"), "flagged": flagged})
