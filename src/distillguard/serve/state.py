"""The service's incremental state in one embedded DuckDB file.

Every table lives in the file, so a restart (or a crash: DuckDB replays its write-ahead
log) answers exactly as before. One `State` object owns the file; all access goes through
its lock, because a DuckDB connection is not safe to share between threads.

Tables:
- `events`: the contract exchanges of the sliding window (older ones are pruned at linking);
- `account_meta`, `release_meta`: contract accounts and releases posted by the gateway;
- `account_state`: per-account running counts and last-seen cues, updated per batch;
- `link_accounts`: the latest linking result per account (replaced at each run);
- `link_campaigns`: every campaign any run found (`current` for the latest run's), so the
  campaign a decision names can still be opened after its membership changed;
- `enforced`: the strongest action any linking run gave each account and in how many runs
  it was flagged (sticky: an account does not regain access because its campaign left
  the window);
- `indicators`: payment fingerprints, rare IPs and ASNs of flagged campaigns;
- `decisions`: the last answer given per account; `meta`: schedule bookkeeping.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES, Table
from distillguard.engine.duckdb_engine import connect
from distillguard.ingest.validate import SQL_TYPE


def _columns_ddl(table: Table, key: str | None = None) -> str:
    cols = [f'"{c.name}" {SQL_TYPE[c.kind]}' + (" PRIMARY KEY" if c.name == key else "")
            for c in table.columns]
    return ", ".join(cols)


SCHEMA = [
    f"CREATE TABLE IF NOT EXISTS events ({_columns_ddl(EXCHANGES, 'exchange_id')})",
    f"CREATE TABLE IF NOT EXISTS account_meta ({_columns_ddl(ACCOUNTS, 'account_id')})",
    f"CREATE TABLE IF NOT EXISTS release_meta ({_columns_ddl(RELEASES)})",
    """CREATE TABLE IF NOT EXISTS account_state (
        account_id VARCHAR PRIMARY KEY, n_events BIGINT, first_ts TIMESTAMP,
        last_ts TIMESTAMP, last_ip VARCHAR, last_asn BIGINT, last_model VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS link_accounts (
        account_id VARCHAR, score DOUBLE, flagged BOOLEAN, campaign_id VARCHAR,
        reasons VARCHAR[])""",
    """CREATE TABLE IF NOT EXISTS link_campaigns (
        campaign_id VARCHAR PRIMARY KEY, score DOUBLE, n_accounts BIGINT, n_exchanges BIGINT,
        first_seen VARCHAR, last_seen VARCHAR, linked_at TIMESTAMP, doc VARCHAR,
        current BOOLEAN)""",
    """CREATE TABLE IF NOT EXISTS enforced (
        account_id VARCHAR PRIMARY KEY, level INTEGER, campaign_id VARCHAR, score DOUBLE,
        reasons VARCHAR[], since TIMESTAMP, runs_flagged INTEGER)""",
    """CREATE TABLE IF NOT EXISTS indicators (
        kind VARCHAR, value VARCHAR, campaign_id VARCHAR, since TIMESTAMP,
        PRIMARY KEY (kind, value))""",
    """CREATE TABLE IF NOT EXISTS decisions (
        account_id VARCHAR PRIMARY KEY, decision VARCHAR, reasons VARCHAR[],
        campaign_id VARCHAR, decided_at TIMESTAMP)""",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
]


class State:
    """The state database: opened once per process, guarded by one lock."""

    def __init__(self, path: Path | str, memory_limit: str = "2GB") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = connect(self.path, memory_limit=memory_limit)
        self.lock = threading.RLock()
        for ddl in SCHEMA:
            self.con.execute(ddl)

    @property
    def run_dir(self) -> Path:
        """Where the latest linking run's files are written (the dashboard reads them)."""
        return self.path.with_name(self.path.name + ".run")

    @contextmanager
    def locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.lock:
            yield self.con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing writes: a crash mid-batch leaves the previous state."""
        with self.lock:
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.locked() as con:
            rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else default

    @staticmethod
    def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: Any) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """A query's rows as dicts (small results only: dashboard and API lookups)."""
        with self.locked() as con:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def add_events(self, batch: pa.Table) -> pa.Table:
        """Store validated contract rows; returns those that were new (not seen before)."""
        if batch.num_rows == 0:
            return batch
        with self.transaction() as con:
            con.register("_batch", batch)
            cols = ", ".join(f'"{c}"' for c in EXCHANGES.names)
            fresh = con.sql(f"INSERT INTO events SELECT {cols} FROM _batch "
                            "ON CONFLICT DO NOTHING RETURNING *").to_arrow_table()
            con.unregister("_batch")
            if fresh.num_rows:
                con.register("_fresh", fresh)
                con.execute("""
                    INSERT INTO account_state
                    SELECT account_id, count(*), min(ts), max(ts), arg_max(ip, ts),
                           arg_max(asn, ts), arg_max(model, ts)
                    FROM _fresh GROUP BY account_id
                    ON CONFLICT (account_id) DO UPDATE SET
                        n_events = account_state.n_events + EXCLUDED.n_events,
                        first_ts = least(account_state.first_ts, EXCLUDED.first_ts),
                        last_ip = CASE WHEN EXCLUDED.last_ts >= account_state.last_ts
                                  THEN coalesce(EXCLUDED.last_ip, account_state.last_ip)
                                  ELSE account_state.last_ip END,
                        last_asn = CASE WHEN EXCLUDED.last_ts >= account_state.last_ts
                                   THEN coalesce(EXCLUDED.last_asn, account_state.last_asn)
                                   ELSE account_state.last_asn END,
                        last_model = CASE WHEN EXCLUDED.last_ts >= account_state.last_ts
                                     THEN coalesce(EXCLUDED.last_model,
                                                   account_state.last_model)
                                     ELSE account_state.last_model END,
                        last_ts = greatest(account_state.last_ts, EXCLUDED.last_ts)""")
                con.unregister("_fresh")
                pending = int(self.meta_in(con, "events_since_link", "0")) + fresh.num_rows
                self.set_meta(con, "events_since_link", pending)
                newest = pc.max(fresh.column("ts")).as_py().isoformat()
                self.set_meta(con, "newest_ts", max(newest, self.meta_in(con, "newest_ts", "")))
        return fresh

    @staticmethod
    def meta_in(con: duckdb.DuckDBPyConnection, key: str, default: str) -> str:
        rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else default

    def upsert(self, table: Table, target: str, rows: pa.Table) -> int:
        """Insert or replace validated accounts (by key) or releases (by model)."""
        key = table.key or "model"
        cols = ", ".join(f'"{c}"' for c in table.names)
        with self.transaction() as con:
            con.register("_rows", rows)
            con.execute(f'DELETE FROM {target} WHERE "{key}" IN (SELECT "{key}" FROM _rows)')
            con.execute(f"INSERT INTO {target} SELECT {cols} FROM _rows")
            con.unregister("_rows")
        return rows.num_rows

    def campaign_doc(self, campaign_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT doc FROM link_campaigns WHERE campaign_id = ?", [campaign_id])
        return json.loads(rows[0]["doc"]) if rows else None

    def close(self) -> None:
        with self.lock:
            self.con.close()
