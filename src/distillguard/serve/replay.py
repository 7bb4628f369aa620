"""`distillguard replay`: a simulated scenario through the service, in time order, at full
speed, and how long each true campaign ran before the service acted on it.

The events go through the real HTTP app in-process (FastAPI's TestClient), accounts are
posted when they sign up and releases when they launch, and linking runs inline so the
result does not depend on the speed of this machine. Per true operator it reports the
simulated hours from its first exchange to the first throttle/block of one of its
accounts, the exchanges it got before that, and the share of its exchanges answered
before each account's own throttle/block; for benign accounts, how many were ever
throttled or blocked (in all and per population) and the share of their exchanges that
came after that. Linking is due at most once per batch, so batches must span much less
event time than `relink_minutes` (the result gives the median span).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from distillguard.engine.duckdb_engine import connect
from distillguard.errors import InputError
from distillguard.serve.app import create_app

ACTED = ("throttle", "block")
Progress = Callable[[int, int], None]


def _records(tbl: pa.Table) -> list[dict[str, Any]]:
    """Arrow rows as JSON-ready dicts (timestamps as ISO-8601 text)."""
    rows = tbl.to_pylist()
    for r in rows:
        for k, v in r.items():
            if hasattr(v, "isoformat"):
                r[k] = v.isoformat()
    return rows


def _batches(con: duckdb.DuckDBPyConnection, size: int) -> Iterator[pa.Table]:
    # Its own cursor: the stream stays open while other queries run on `con`.
    reader = con.cursor().sql("SELECT * EXCLUDE (_ts_order) FROM _feed ORDER BY _ts_order"
                     ).to_arrow_reader(size)
    buffer: list[pa.RecordBatch] = []
    rows = 0
    for batch in reader:
        buffer.append(batch)
        rows += batch.num_rows
        while rows >= size:
            tbl = pa.Table.from_batches(buffer)
            yield tbl.slice(0, size)
            rest = tbl.slice(size)
            buffer, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(buffer)


def _load(con: duckdb.DuckDBPyConnection, scenario: Path, hours: float | None) -> None:
    for name in ("exchanges", "accounts.parquet", "truth.parquet"):
        if not (scenario / name).exists():
            raise InputError(f"not a simulated scenario directory: {name} is missing",
                             file=str(scenario))
    lit = str(scenario).replace("'", "''")
    con.execute(f"CREATE TABLE ex AS SELECT * FROM read_parquet('{lit}/exchanges/**/*.parquet')")
    if hours is not None:
        con.execute("DELETE FROM ex WHERE ts >= (SELECT min(ts) FROM ex) + to_microseconds("
                    "CAST(? * 3600e6 AS BIGINT))", [float(hours)])
    con.execute("CREATE TABLE _feed AS SELECT *, row_number() OVER (ORDER BY ts, exchange_id) "
                "AS _ts_order FROM ex")
    con.execute(f"CREATE TABLE acc AS SELECT * FROM read_parquet('{lit}/accounts.parquet')")
    con.execute(f"CREATE TABLE truth AS SELECT * FROM read_parquet('{lit}/truth.parquet')")
    releases = scenario / "releases.parquet"
    if releases.exists():
        con.execute(f"CREATE TABLE rel AS SELECT * FROM read_parquet('{releases}')")
    else:
        con.execute("CREATE TABLE rel (model VARCHAR, released_at TIMESTAMP)")


def _plan(con: duckdb.DuckDBPyConnection, batch_size: int) -> None:
    """The batch before which each account (at sign-up or first exchange, whichever comes
    first) and each release (at launch) is posted."""
    size = int(batch_size)
    con.execute(f"""CREATE OR REPLACE TABLE batch_time AS
        SELECT (_ts_order - 1) // {size} AS batch, max(ts) AS ts FROM _feed GROUP BY ALL""")
    con.execute(f"""CREATE OR REPLACE TABLE acc_plan AS
        SELECT a.*, least(f.first_batch, coalesce(
                   (SELECT min(b.batch) FROM batch_time b WHERE b.ts >= a.created_at),
                   CASE WHEN a.created_at IS NULL THEN 0 END)) AS _post_batch
        FROM acc a LEFT JOIN (SELECT account_id, min((_ts_order - 1) // {size}) AS first_batch
                              FROM _feed GROUP BY ALL) f USING (account_id)""")
    con.execute("""CREATE OR REPLACE TABLE rel_plan AS
        SELECT r.*, coalesce((SELECT min(b.batch) FROM batch_time b
                              WHERE b.ts >= r.released_at), -1) AS _post_batch FROM rel r""")


def _due(con: duckdb.DuckDBPyConnection, table: str, index: int) -> list[dict[str, Any]]:
    return _records(con.sql(f"SELECT * EXCLUDE (_post_batch) FROM {table} "
                            f"WHERE _post_batch = {int(index)}").to_arrow_table())


def replay(scenario: Path, db: Path, cfg: dict[str, Any], token: str, batch_size: int = 100,
           hours: float | None = None,
           progress: Progress = lambda done, total: None) -> dict[str, Any]:
    """Feed SCENARIO's exchanges to a fresh service on DB; return the time-to-action table.

    With `hours`, only the scenario's first HOURS of simulated time are replayed.
    """
    from fastapi.testclient import TestClient

    if db.exists():
        raise InputError("the replay needs a fresh state database; this one exists",
                         file=str(db))
    cfg = copy.deepcopy(cfg)
    cfg["serve"]["relink_mode"] = "inline"
    con = connect()
    _load(con, Path(scenario), hours)
    _plan(con, batch_size)
    total = con.execute("SELECT count(*) FROM ex").fetchall()[0][0]
    acted_batch: dict[str, int] = {}
    limit = int(cfg["serve"]["max_batch_events"])
    headers = {"Authorization": f"Bearer {token}"}
    done = 0
    with TestClient(create_app(db, token, cfg, write_files=False)) as client:
        for index, batch in enumerate(_batches(con, batch_size)):
            for table, path in (("rel_plan", "/v1/releases"), ("acc_plan", "/v1/accounts")):
                due = _due(con, table, index)
                for start in range(0, len(due), limit):
                    client.post(path, headers=headers,
                                json=due[start:start + limit]).raise_for_status()
            answer = client.post("/v1/events", headers=headers, json=_records(batch))
            answer.raise_for_status()
            for account, d in answer.json()["decisions"].items():
                if d["decision"] in ACTED and account not in acted_batch:
                    acted_batch[account] = index
            done += batch.num_rows
            progress(done, total)
    return _summarise(con, acted_batch, batch_size)


def _summarise(con: duckdb.DuckDBPyConnection, acted_batch: dict[str, int],
               batch_size: int) -> dict[str, Any]:
    """Per operator and for the benign accounts: time to first action and what got through."""
    con.register("_acted_in", pa.table({"account_id": pa.array(list(acted_batch), pa.string()),
                                        "batch": pa.array(list(acted_batch.values()),
                                                          pa.int64())}))
    con.execute(f"""CREATE OR REPLACE TABLE fed AS
        SELECT f.account_id, f.ts, (f._ts_order - 1) // {int(batch_size)} AS batch,
               t.operator, t.population, a.batch AS acted_batch
        FROM _feed f LEFT JOIN truth t USING (account_id)
        LEFT JOIN _acted_in a USING (account_id)""")
    operators = con.sql("""
        WITH o AS (SELECT operator, min(ts) AS first_ts, count(*) AS n_exchanges,
                          count(DISTINCT account_id) AS n_accounts,
                          min(acted_batch) AS first_batch,
                          count(DISTINCT account_id) FILTER (WHERE acted_batch IS NOT NULL)
                              AS accounts_acted,
                          count(*) FILTER (WHERE acted_batch IS NULL OR batch <= acted_batch)
                              AS served
                   FROM fed WHERE operator IS NOT NULL GROUP BY operator)
        SELECT o.operator, o.n_accounts, o.n_exchanges, o.accounts_acted,
               date_diff('second', o.first_ts, b.ts) / 3600.0 AS hours_to_action,
               (SELECT count(*) FROM fed f WHERE f.operator = o.operator
                  AND f.batch <= o.first_batch) AS exchanges_before_action,
               o.served
        FROM o LEFT JOIN batch_time b ON b.batch = o.first_batch
        ORDER BY o.operator""").fetchall()
    rows = [{"operator": op, "accounts": n_acc, "exchanges": n_ex, "accounts_acted": acted,
             "hours_to_action": None if hours is None else round(float(hours), 2),
             "exchanges_before_action": int(before) if hours is not None else None,
             "share_before_action": round(before / n_ex, 4) if hours is not None else None,
             "share_served": round(served / n_ex, 4)}
            for op, n_acc, n_ex, acted, hours, before, served in operators]
    benign = con.sql("""
        SELECT count(DISTINCT account_id), count(DISTINCT account_id) FILTER
                   (WHERE acted_batch IS NOT NULL),
               count(*), count(*) FILTER (WHERE acted_batch IS NOT NULL AND batch > acted_batch)
        FROM fed WHERE operator IS NULL""").fetchall()[0]
    n_acc, acc_acted, n_ex, ex_acted = (int(v) for v in benign)
    # The target is per benign population: a small one (a university lab) must not be
    # hidden by thousands of casual users.
    populations = {pop: {"accounts": int(n), "accounts_acted": int(acted),
                         "account_fp_rate": round(acted / max(n, 1), 5)}
                   for pop, n, acted in con.sql("""
        SELECT coalesce(population, 'unknown'), count(DISTINCT account_id),
               count(DISTINCT account_id) FILTER (WHERE acted_batch IS NOT NULL)
        FROM fed WHERE operator IS NULL GROUP BY 1 ORDER BY 1""").fetchall()}
    # Linking is due at most once per batch and an action is seen at the batch after it,
    # so batches spanning more than a few minutes of event time blur both.
    span = con.execute(f"""SELECT median(date_diff('second', lo, hi)) / 60.0 FROM (
        SELECT min(ts) AS lo, max(ts) AS hi FROM _feed
        GROUP BY (_ts_order - 1) // {int(batch_size)})""").fetchall()[0][0]
    return {"operators": rows, "batch_span_minutes": round(float(span or 0.0), 1),
            "benign": {"accounts": n_acc, "accounts_acted": acc_acted,
                       "account_fp_rate": round(acc_acted / max(n_acc, 1), 5),
                       "exchanges": n_ex, "exchanges_acted": ex_acted,
                       "exchange_fp_rate": round(ex_acted / max(n_ex, 1), 5),
                       "populations": populations}}
