"""The service's incremental state in one embedded DuckDB file.

Every table lives in the file, so a restart (or a crash: DuckDB replays its write-ahead
log) answers as before. One `State` object owns the file; all access to the connection
goes through its lock, because a DuckDB connection is not safe to share between threads.

The request path does not wait for DuckDB (one statement costs milliseconds, a commit
more): accepted events and the decisions answered go to an in-memory buffer that a
writer thread commits in one transaction every `commit_seconds` (group commit), and
what decisions read — `enforced`, `indicators`, allowlisting and payment fingerprints —
is kept in memory, reloaded after any other write. Every other access first writes the
buffer, so reads see every answer given. A crash (SIGKILL, power loss) loses the events
answered in the last `commit_seconds` and the commit under way; a normal stop writes them.

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
- `decisions`: the last answer given per account, with the event time of the batch that
  first gave it; `meta`: schedule bookkeeping.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES, Table
from distillguard.engine.duckdb_engine import connect
from distillguard.ingest.validate import SQL_TYPE
from distillguard.serve.events import arrow_schema

log = logging.getLogger(__name__)

# Group commit: the writer commits sooner than `[serve] commit_seconds` once this many
# events wait, so that one commit stays short.
COMMIT_EVENTS = 5000
# Niceness the writer thread adds to its own (Linux, where niceness is per thread): the
# group commits then yield the cores to the event loop's thread on a busy machine.
WRITER_NICENESS = 5


def _columns_ddl(table: Table, key: str | None = None) -> str:
    cols = [f'"{c.name}" {SQL_TYPE[c.kind]}' + (" PRIMARY KEY" if c.name == key else "")
            for c in table.columns]
    return ", ".join(cols)


SCHEMA = [
    # No key: repeats are caught in memory (`State.seen`), and an index made each group
    # commit cost twice as much. (Files made before this keep their key; harmless.)
    f"CREATE TABLE IF NOT EXISTS events ({_columns_ddl(EXCHANGES)})",
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


_EVENTS_SCHEMA = arrow_schema(EXCHANGES)
_DECISIONS_SCHEMA = pa.schema([("account_id", pa.string()), ("decision", pa.string()),
                               ("reasons", pa.list_(pa.string())),
                               ("campaign_id", pa.string()), ("decided_at", pa.timestamp("us"))])
_UPSERT_ACCOUNT_STATE = """
    INSERT INTO account_state
    SELECT account_id, count(*), min(ts), max(ts), arg_max(ip, ts),
           arg_max(asn, ts), arg_max(model, ts)
    FROM _batch GROUP BY account_id
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
                     THEN coalesce(EXCLUDED.last_model, account_state.last_model)
                     ELSE account_state.last_model END,
        last_ts = greatest(account_state.last_ts, EXCLUDED.last_ts)"""


@dataclass(frozen=True)
class Facts:
    """A snapshot of what linking left for decisions: `enforced` and `indicators`."""

    # account -> (level, runs_flagged, campaign_id, score, reasons)
    enforced: dict[str, tuple[int, int, str | None, float | None, list[str] | None]]
    payment: dict[str, str]  # payment fingerprint -> campaign
    ips: dict[str, str]  # IP -> campaign


@dataclass
class _Buffer:
    """Answered but not yet committed: event rows per request and the last decisions."""

    events: list[pa.Table] = field(default_factory=list)
    decisions: dict[str, tuple[str, list[str], str | None, datetime]] = \
        field(default_factory=dict)
    n_events: int = 0


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts is not None else None


class State:
    """The state database: opened once per process, its connection guarded by one lock,
    the request path's buffer and caches by another (held for microseconds)."""

    def __init__(self, path: Path | str, memory_limit: str = "2GB",
                 commit_seconds: float = 0.2) -> None:
        self.path = Path(path)
        self.commit_seconds = commit_seconds
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One thread: DuckDB runs the group commits in the (lower-priority) writer thread,
        # not in worker threads of its own that competed with the event loop for cores.
        self.con = connect(self.path, memory_limit=memory_limit, threads=1)
        self.lock = threading.RLock()
        self._mem = threading.Lock()
        for ddl in SCHEMA:
            self.con.execute(ddl)
        self._buffer = _Buffer()
        con = self.con
        self.seen: set[str] = {r[0] for r in con.execute("SELECT exchange_id FROM events")
                               .fetchall()}
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        self.pending = int(meta.get("events_since_link", 0))
        self.newest_ts = _parse(meta.get("newest_ts"))
        self.last_link_ts = _parse(meta.get("last_link_ts"))
        self.oldest_ts: datetime | None = con.execute("SELECT min(ts) FROM events"
                                                      ).fetchall()[0][0]
        # pending and newest_ts as of the last write of the buffer (what linking sees)
        self._flushed = (self.pending, self.newest_ts)
        # account -> (decision, reasons, campaign) last stored in `decisions`
        self.decided: dict[str, tuple[str, tuple[str, ...], str | None]] = {
            a: (d, tuple(r or ()), c) for a, d, r, c in con.execute(
                "SELECT account_id, decision, reasons, campaign_id FROM decisions").fetchall()}
        self.allowlisted: set[str] = set()
        self.fingerprints: dict[str, str] = {}
        self._remember_accounts(con.execute(
            "SELECT account_id, allowlisted, payment_fingerprint FROM account_meta "
            "WHERE allowlisted OR payment_fingerprint IS NOT NULL").fetchall())
        # Replaced whole (never changed in place) after every write to what it holds.
        self.facts = self._load_facts()
        self.write_error: str | None = None
        self._closed = threading.Event()
        self._wake = threading.Event()
        self._writer = threading.Thread(target=self._write_loop, name="distillguard-writer",
                                        daemon=True)
        self._writer.start()

    @property
    def run_dir(self) -> Path:
        """Where the latest linking run's files are written (the dashboard reads them)."""
        return self.path.with_name(self.path.name + ".run")

    @contextmanager
    def locked(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """The connection, after the buffer was written (reads see every answer given)."""
        with self.lock:
            self.flush()
            yield self.con

    @contextmanager
    def transaction(self, changes_facts: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
        """All-or-nothing writes: a crash mid-batch leaves the previous state. Unless told
        otherwise, the decisions' facts are reloaded after the commit, by the writer (the
        request path only ever reads the latest snapshot)."""
        with self.lock:
            self.flush()
            self.con.execute("BEGIN TRANSACTION")
            try:
                yield self.con
            except BaseException:
                self.con.execute("ROLLBACK")
                raise
            self.con.execute("COMMIT")
            if changes_facts:
                self.facts = self._load_facts()

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        with self.locked() as con:
            rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else default

    @staticmethod
    def set_meta(con: duckdb.DuckDBPyConnection, key: str, value: Any) -> None:
        con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])

    @staticmethod
    def meta_in(con: duckdb.DuckDBPyConnection, key: str, default: str) -> str:
        rows = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()
        return rows[0][0] if rows else default

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """A query's rows as dicts (small results only: dashboard and API lookups)."""
        with self.locked() as con:
            cur = con.execute(sql, params or [])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def add_events(self, rows: dict[str, list[Any]]) -> list[bool]:
        """Buffer validated contract rows (by column); returns which were new. A repeated
        `exchange_id` (stored, buffered or earlier in the same rows) is not kept.

        The rows become Arrow here, a request at a time, so that the writer does not
        hold the interpreter lock for a whole group's conversion (a latency spike)."""
        table = pa.table(rows, schema=_EVENTS_SCHEMA)
        ids, times = rows["exchange_id"], rows["ts"]
        with self._mem:
            fresh = []
            for x in ids:
                new = x not in self.seen
                if new:
                    self.seen.add(x)
                fresh.append(new)
            n = sum(fresh)
            if n:
                if n < len(ids):
                    table = table.filter(pa.array(fresh))
                    times = [t for t, f in zip(times, fresh, strict=True) if f]
                self._buffer.events.append(table)
                self._buffer.n_events += n
                self.pending += n
                newest, oldest = max(times), min(times)
                self.newest_ts = newest if self.newest_ts is None else max(self.newest_ts,
                                                                           newest)
                self.oldest_ts = oldest if self.oldest_ts is None else min(self.oldest_ts,
                                                                           oldest)
            full = self._buffer.n_events >= COMMIT_EVENTS
        if full:
            self._wake.set()
        return fresh

    def add_decisions(self, decided: dict[str, dict[str, Any]],
                      at: dict[str, datetime]) -> None:
        """Remember the decisions answered (by account, with the event time each was
        given at) that differ from the account's stored one, for the next commit: most
        answers repeat the last, and writing each was a third of the store's work."""
        with self._mem:
            for account, d in decided.items():
                key = (d["decision"], tuple(d["reasons"]), d["campaign_id"])
                if self.decided.get(account) != key:
                    self.decided[account] = key
                    self._buffer.decisions[account] = (d["decision"], d["reasons"],
                                                       d["campaign_id"], at[account])

    def flush(self) -> None:
        """Write the buffer in one transaction (group commit)."""
        with self.lock:
            with self._mem:
                buf, self._buffer = self._buffer, _Buffer()
                self._flushed = (self.pending, self.newest_ts)
            if not buf.events and not buf.decisions:
                return
            try:
                self._write(buf.events, buf.decisions)
            except duckdb.Error as exc:  # one bad request must not lose the others
                log.exception("group commit failed; writing its requests one by one")
                self.write_error = f"{type(exc).__name__}: {exc}"
                for rows in buf.events:
                    try:
                        self._write([rows], {})
                    except duckdb.Error:
                        log.exception("events of one request could not be stored")
                self._write([], buf.decisions)

    def _write(self, events: list[pa.Table],
               decisions: dict[str, tuple[str, list[str], str | None, datetime]]) -> None:
        con = self.con
        con.execute("BEGIN TRANSACTION")
        try:
            if events:
                con.register("_batch", pa.concat_tables(events))
                cols = ", ".join(f'"{c}"' for c in EXCHANGES.names)
                con.execute(f"INSERT INTO events SELECT {cols} FROM _batch")
                con.execute(_UPSERT_ACCOUNT_STATE)
                con.unregister("_batch")
                pending, newest = self._flushed
                con.execute("INSERT OR REPLACE INTO meta VALUES ('events_since_link', ?), "
                            "('newest_ts', ?)", [str(pending), _iso(newest)])
            if decisions:
                con.register("_decided", pa.table(
                    [list(decisions), *map(list, zip(*decisions.values(), strict=True))],
                    schema=_DECISIONS_SCHEMA))
                con.execute("INSERT OR REPLACE INTO decisions SELECT * FROM _decided")
                con.unregister("_decided")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def _write_loop(self) -> None:
        """The writer thread: a group commit every `commit_seconds` (sooner when full),
        at a lower priority than the request path's where the platform allows."""
        if sys.platform.startswith("linux"):  # this thread only
            with suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, 0, min(
                    19, os.getpriority(os.PRIO_PROCESS, 0) + WRITER_NICENESS))
        while not self._closed.is_set():
            self._wake.wait(self.commit_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # kept for /v1/status; the next commit tries again
                log.exception("group commit failed")
                self.write_error = f"{type(exc).__name__}: {exc}"

    def prune(self, con: duckdb.DuckDBPyConnection, cut: datetime) -> None:
        """Drop events older than CUT from the store (and from the repeat check)."""
        gone = con.execute("DELETE FROM events WHERE ts < ? RETURNING exchange_id",
                           [cut]).fetchall()
        with self._mem:
            self.seen.difference_update(r[0] for r in gone)
            self.oldest_ts = None if self.oldest_ts is None else max(self.oldest_ts, cut)

    def linked(self, con: duckdb.DuckDBPyConnection) -> datetime:
        """Start a linking run over what is stored: reset the schedule's counters (events
        buffered since the last write count towards the next run); its newest time."""
        with self._mem:
            done, newest = self._flushed
            self.pending -= done
            self.last_link_ts = newest
            self._flushed = (0, newest)
        self.set_meta(con, "events_since_link", self.pending)
        self.set_meta(con, "last_link_ts", _iso(newest))
        assert newest is not None
        return newest

    def _load_facts(self) -> Facts:
        with self.lock:
            enforced = {a: (int(level), int(runs or 0), c, score, reasons)
                        for a, level, runs, c, score, reasons in self.con.execute(
                            "SELECT account_id, level, runs_flagged, campaign_id, score, "
                            "reasons FROM enforced").fetchall()}
            inds = self.con.execute("SELECT kind, value, campaign_id FROM indicators"
                                    ).fetchall()
        return Facts(enforced, {v: c for k, v, c in inds if k == "payment_fingerprint"},
                     {v: c for k, v, c in inds if k == "ip"})

    def _remember_accounts(self, rows: list[tuple[str, bool | None, str | None]]) -> None:
        """Keep allowlisting and payment fingerprints of accounts (as stored) in memory."""
        for account, allowlisted, fingerprint in rows:
            if allowlisted:
                self.allowlisted.add(account)
            else:
                self.allowlisted.discard(account)
            if fingerprint is None:
                self.fingerprints.pop(account, None)
            else:
                self.fingerprints[account] = fingerprint

    def upsert(self, table: Table, target: str, rows: pa.Table) -> int:
        """Insert or replace validated accounts (by key) or releases (by model)."""
        key = table.key or "model"
        cols = ", ".join(f'"{c}"' for c in table.names)
        with self.transaction(changes_facts=False) as con:
            con.register("_rows", rows)
            con.execute(f'DELETE FROM {target} WHERE "{key}" IN (SELECT "{key}" FROM _rows)')
            con.execute(f"INSERT INTO {target} SELECT {cols} FROM _rows")
            con.unregister("_rows")
        if table is ACCOUNTS:
            self._remember_accounts(list(zip(*(rows.column(c).to_pylist() for c in (
                "account_id", "allowlisted", "payment_fingerprint")), strict=True)))
        return rows.num_rows

    def campaign_doc(self, campaign_id: str) -> dict[str, Any] | None:
        rows = self.rows("SELECT doc FROM link_campaigns WHERE campaign_id = ?", [campaign_id])
        return json.loads(rows[0]["doc"]) if rows else None

    def close(self) -> None:
        """Stop the writer and write what it had not (a normal stop loses nothing)."""
        self._closed.set()
        self._wake.set()
        self._writer.join()
        with self.lock:
            self.flush()
            self.con.close()


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
