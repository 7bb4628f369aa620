"""Re-linking on a schedule: the batch detection over the sliding window of stored events.

Campaigns only show when their accounts are linked to each other, which needs many
accounts' traffic at once; per-event scoring cannot do it. So the service re-runs the
whole detection (`detect.run`, the same code as `distillguard detect`) over the last
`window_hours` of event time every `relink_minutes` of event time (or `relink_events`
events), and the decisions follow its latest result.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa

from distillguard import detect
from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES
from distillguard.engine.duckdb_engine import connect
from distillguard.engine.session import DuckDBSession
from distillguard.ingest import IngestReport, TableReport
from distillguard.outputs import run_dir
from distillguard.serve.decisions import LEVEL
from distillguard.serve.state import State

# Indicator kinds of a campaign that decisions and the search use.
INDICATOR_KINDS = {"payment_fingerprints": "payment_fingerprint", "ips": "ip", "asns": "asn",
                   "cidrs": "cidr"}


def due(state: State, cfg: dict[str, Any]) -> bool:
    """Whether the schedule calls for a linking run now."""
    s = cfg["serve"]
    pending = int(state.get_meta("events_since_link", "0") or 0)
    if not pending:
        return False
    if s["relink_events"] and pending >= int(s["relink_events"]):
        return True
    newest = state.get_meta("newest_ts")
    last = state.get_meta("last_link_ts")
    if last is None:
        rows = state.rows("SELECT min(ts) AS t FROM events")
        last = rows[0]["t"].isoformat() if rows and rows[0]["t"] else newest
    elapsed = datetime.fromisoformat(newest) - datetime.fromisoformat(last)
    return elapsed >= timedelta(minutes=float(s["relink_minutes"]))


def _window(state: State, cfg: dict[str, Any]) -> tuple[datetime, dict[str, pa.Table]]:
    """Prune events older than the window and copy the window out of the store."""
    with state.transaction() as con:
        newest = datetime.fromisoformat(state.meta_in(con, "newest_ts", ""))
        cut = newest - timedelta(hours=float(cfg["serve"]["window_hours"]))
        con.execute("DELETE FROM events WHERE ts < ?", [cut])
        tables = {"exchanges": con.sql("SELECT * FROM events").to_arrow_table(),
                  "accounts": con.sql("SELECT * FROM account_meta WHERE account_id IN "
                                      "(SELECT DISTINCT account_id FROM events)"
                                      ).to_arrow_table(),
                  "releases": con.sql("SELECT * FROM release_meta").to_arrow_table()}
        State.set_meta(con, "events_since_link", 0)
        State.set_meta(con, "last_link_ts", newest.isoformat())
    return newest, tables


def _ingest_views(con: Any, tables: dict[str, pa.Table]) -> IngestReport:
    """Register the (already validated) window as the contract views detection reads."""
    reports: dict[str, TableReport] = {}
    for table in (EXCHANGES, ACCOUNTS, RELEASES):
        data = tables[table.name]
        con.register(f"_{table.name}_window", data)
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{table.name}" AS '
                    f'SELECT * FROM "_{table.name}_window"')
        con.unregister(f"_{table.name}_window")
        if table is EXCHANGES or data.num_rows:
            reports[table.name] = TableReport(table.name, ["state"], data.num_rows,
                                              data.num_rows, 0, list(table.names))
    return IngestReport(reports, [])


def _store(state: State, det: detect.Detection, linked_at: datetime,
           cfg: dict[str, Any]) -> None:
    """Replace the latest result; raise sticky levels; add the campaigns' indicators."""
    s = cfg["serve"]
    acc = det.accounts[["account_id", "score", "flagged", "campaign_id", "reasons"]].copy()
    acc["level"] = 0
    acc.loc[acc["score"] >= float(s["watch_min_score"]), "level"] = LEVEL["watch"]
    acc.loc[acc["flagged"], "level"] = LEVEL["throttle"]
    acc.loc[acc["flagged"] & (acc["score"] >= float(s["block_min_score"])),
            "level"] = LEVEL["block"]
    acc["since"] = pd.Timestamp(linked_at)
    camps = pd.DataFrame({
        "campaign_id": [c["campaign_id"] for c in det.campaigns],
        "score": [float(c["score"]) for c in det.campaigns],
        "n_accounts": [int(c["n_accounts"]) for c in det.campaigns],
        "n_exchanges": [int(c["n_exchanges"]) for c in det.campaigns],
        "first_seen": [c["first_seen"] for c in det.campaigns],
        "last_seen": [c["last_seen"] for c in det.campaigns],
        "linked_at": pd.Series([pd.Timestamp(linked_at)] * len(det.campaigns),
                               dtype="datetime64[us]"),
        "doc": [json.dumps(c, default=str) for c in det.campaigns],
        "current": True})
    inds = pd.DataFrame(
        [(kind, str(v), c["campaign_id"]) for c in det.campaigns
         for key, kind in INDICATOR_KINDS.items() for v in c["indicators"].get(key, [])],
        columns=["kind", "value", "campaign_id"]).drop_duplicates(["kind", "value"])
    inds["since"] = pd.Series([pd.Timestamp(linked_at)] * len(inds), dtype="datetime64[us]")
    with state.transaction() as con:
        con.register("_acc", acc)
        con.register("_camps", camps)
        con.register("_inds", inds)
        con.execute("DELETE FROM link_accounts")
        con.execute("INSERT INTO link_accounts SELECT account_id, score, flagged, campaign_id, "
                    "reasons FROM _acc")
        con.execute("UPDATE link_campaigns SET current = false WHERE current")
        con.execute("INSERT OR REPLACE INTO link_campaigns SELECT * FROM _camps")
        con.execute("""
            INSERT INTO enforced SELECT account_id, level, campaign_id, score, reasons, since,
                CAST(flagged AS INTEGER) FROM _acc WHERE level > 0
            ON CONFLICT (account_id) DO UPDATE SET
                runs_flagged = enforced.runs_flagged + EXCLUDED.runs_flagged,
                campaign_id = CASE WHEN EXCLUDED.level > enforced.level
                              THEN EXCLUDED.campaign_id ELSE enforced.campaign_id END,
                score = greatest(EXCLUDED.score, enforced.score),
                reasons = CASE WHEN EXCLUDED.level > enforced.level
                          THEN EXCLUDED.reasons ELSE enforced.reasons END,
                since = CASE WHEN EXCLUDED.level > enforced.level
                        THEN EXCLUDED.since ELSE enforced.since END,
                level = greatest(EXCLUDED.level, enforced.level)""")
        con.execute("INSERT OR IGNORE INTO indicators SELECT * FROM _inds")
        for name in ("_acc", "_camps", "_inds"):
            con.unregister(name)
        n = int(state.meta_in(con, "n_links", "0")) + 1
        State.set_meta(con, "n_links", n)


def relink(state: State, cfg: dict[str, Any], write_files: bool = True) -> dict[str, Any]:
    """One linking run over the window; returns what it found (for logs and replay)."""
    started = time.perf_counter()
    linked_at, tables = _window(state, cfg)
    con = connect(memory_limit=cfg["engine"]["memory_limit"])
    try:
        ingest = _ingest_views(con, tables)
        session = DuckDBSession(con)
        det = detect.run(session, ingest, cfg)
        run_dir.finalize(session, det)
        _store(state, det, linked_at, cfg)
        if write_files:
            tmp = state.run_dir.with_name(state.run_dir.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            run_dir.write(tmp, det, ingest, {"exchanges": [str(state.path)], "accounts": [],
                                             "releases": []}, cfg, engine="duckdb")
            old = state.run_dir.with_name(state.run_dir.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if state.run_dir.exists():
                state.run_dir.rename(old)
            tmp.rename(state.run_dir)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        con.close()
    seconds = time.perf_counter() - started
    with state.transaction() as c:
        State.set_meta(c, "last_link_seconds", f"{seconds:.2f}")
    return {"linked_at": linked_at, "exchanges": tables["exchanges"].num_rows,
            "campaigns": len(det.campaigns), "flagged": int(det.accounts["flagged"].sum()),
            "seconds": seconds}


class Linker:
    """Runs linking when due: inline (in the caller) or on one background worker."""

    def __init__(self, state: State, cfg: dict[str, Any], write_files: bool = True) -> None:
        self.state, self.cfg, self.write_files = state, cfg, write_files
        self.inline = cfg["serve"]["relink_mode"] == "inline"
        self._pool = None if self.inline else ThreadPoolExecutor(1, "distillguard-link")
        self._running: Future | None = None
        self._guard = threading.Lock()
        self.last: dict[str, Any] | None = None
        self.error: str | None = None

    def maybe_run(self) -> bool:
        """Start (or, inline, do) a run if one is due and none is running; True if started."""
        if not due(self.state, self.cfg):
            return False
        if self.inline:
            self.last = relink(self.state, self.cfg, self.write_files)
            return True
        with self._guard:
            if self._running is not None and not self._running.done():
                return False
            assert self._pool is not None
            self._running = self._pool.submit(self._background)
        return True

    def _background(self) -> None:
        try:
            self.last = relink(self.state, self.cfg, self.write_files)
            self.error = None
        except Exception as exc:  # the service keeps answering from the last run
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self) -> None:
        """Block until a background run in progress has finished (tests, shutdown)."""
        if self._running is not None:
            self._running.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
