"""Re-linking on a schedule: the batch detection over the sliding window of stored events.

Campaigns only show when their accounts are linked to each other, which needs many
accounts' traffic at once; per-event scoring cannot do it. So the service re-runs the
whole detection (`detect.run`, the same code as `distillguard detect`) over the last
`window_hours` of event time every `relink_minutes` of event time (or `relink_events`
events), and the decisions follow its latest result.

In the background mode the detection runs in a child process at a lower CPU priority
(`[serve] link_niceness`): it is seconds to minutes of CPU, much of it Python holding the
interpreter lock, which in a thread would stall the request path for as long. The window
goes to it as Parquet files written by DuckDB, not pickled through the interpreter.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from distillguard import campaigns as cmp
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
    """Whether the schedule calls for a linking run now (from the state's counters)."""
    s = cfg["serve"]
    if not state.pending or state.newest_ts is None:
        return False
    if s["relink_events"] and state.pending >= int(s["relink_events"]):
        return True
    last = state.last_link_ts or state.oldest_ts or state.newest_ts
    return state.newest_ts - last >= timedelta(minutes=float(s["relink_minutes"]))


def _window(state: State, cfg: dict[str, Any]) -> tuple[datetime, Path, int]:
    """Prune events older than the window and have DuckDB write the window to Parquet
    files (outside the interpreter lock) that the detection reads, in this process or
    the child; returns the run's time, the directory of the files and the events in it."""
    folder = state.path.with_name(state.path.name + ".window")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    queries = {EXCHANGES.name: "SELECT * FROM events",
               ACCOUNTS.name: "SELECT * FROM account_meta WHERE account_id IN "
                              "(SELECT DISTINCT account_id FROM events)",
               RELEASES.name: "SELECT * FROM release_meta"}
    with state.transaction(changes_facts=False) as con:
        newest = state.linked(con)
        cut = newest - timedelta(hours=float(cfg["serve"]["window_hours"]))
        state.prune(con, cut)
        written = {}
        for name, sql in queries.items():
            target = str(folder / f"{name}.parquet").replace("'", "''")
            written[name] = con.execute(f"COPY ({sql}) TO '{target}' (FORMAT parquet)"
                                        ).fetchall()[0][0]
    return newest, folder, int(written[EXCHANGES.name])


def _ingest_views(con: Any, folder: Path) -> IngestReport:
    """Load the (already validated) window files as the contract tables detection reads."""
    reports: dict[str, TableReport] = {}
    for table in (EXCHANGES, ACCOUNTS, RELEASES):
        path = str(folder / f"{table.name}.parquet").replace("'", "''")
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{table.name}" AS '
                    f"SELECT * FROM read_parquet('{path}')")
        rows = con.execute(f'SELECT count(*) FROM "{table.name}"').fetchall()[0][0]
        if table is EXCHANGES or rows:
            reports[table.name] = TableReport(table.name, ["state"], rows, rows, 0,
                                              list(table.names))
    return IngestReport(reports, [])


def campaign_behaviours(campaign: dict[str, Any], cfg: dict[str, Any]) -> set[str] | None:
    """The behaviours (`ANOMALY_DIMENSIONS`) that made a campaign stand out: its
    `unusual_*` signals with strength, that is above `anomaly_floor`, leaving out the
    `supporting_behaviours` that never stand alone. None when a member cannot be checked
    against them: the campaign's behaviour evidence includes a release pivot (a per-cluster
    fact), or it names no behaviour."""
    c = cfg["campaigns"]
    dims = set()
    for sig in campaign.get("signals", []):
        name, value = sig["name"], float(sig["value"])
        if name == "release_pivot" and value >= float(c["pivot_min_share"]):
            return None
        dim = name[len("unusual_"):]
        if (name.startswith("unusual_") and value > cmp.anomaly_floor(dim, c)
                and dim not in c.get("supporting_behaviours", ())):
            dims.add(dim)
    return dims or None


def bystanders(accounts: pd.DataFrame, campaigns: list[dict[str, Any]],
               cfg: dict[str, Any]) -> dict[str, str]:
    """Flagged members that show none of their campaign's behaviours themselves, with the
    reason to give. A member shows a share behaviour when at least `pool_min_hits` of its
    exchanges in the window do it (one such exchange is an anecdote, as for pooled
    evidence), another behaviour when its value is above 0. A cluster pulls in accounts
    through a shared card, network or a few shared phrasings (a reseller's customers, a
    developer behind the same egress); linking flags them with the campaign, and over
    overlapping windows a second run flags them again, so confirmation does not remove
    them. Acting needs evidence of the account's own: such members are watched."""
    out: dict[str, str] = {}
    hits = max(1, int(cfg["campaigns"]["pool_min_hits"]))
    flagged = accounts[accounts["flagged"] & accounts["campaign_id"].notna()]
    for campaign in campaigns:
        dims = campaign_behaviours(campaign, cfg)
        m = flagged[flagged["campaign_id"] == campaign["campaign_id"]]
        if dims is None or m.empty or not dims & set(m.columns):
            continue
        shows = np.zeros(len(m), dtype=bool)
        for d in dims & set(m.columns):
            shows |= (cmp.leaning(m, {d: 0.0}, d, hits) if d in cmp.SHARE_DIMENSIONS
                      else np.nan_to_num(m[d].to_numpy(dtype=float)) > 0)
        reason = (f"campaign_bystander:{campaign['campaign_id']} (none of its behaviours: "
                  f"{', '.join(sorted(dims))})")
        out.update(dict.fromkeys(m.loc[~shows, "account_id"], reason))
    return out


def _store(state: State, accounts: pd.DataFrame, campaigns: list[dict[str, Any]],
           linked_at: datetime, cfg: dict[str, Any]) -> None:
    """Replace the latest result; raise sticky levels; add the campaigns' indicators.

    With `member_behaviour_required`, flagged members that show none of their campaign's
    behaviours (`bystanders`) are watched, and the run does not count toward their
    confirmation."""
    s = cfg["serve"]
    acc = accounts.copy()
    enforce = acc["flagged"].copy()
    if s.get("member_behaviour_required", True):
        aside = bystanders(acc, campaigns, cfg)
        if aside:
            hit = acc["account_id"].isin(aside.keys())
            enforce &= ~hit
            acc.loc[hit, "reasons"] = pd.Series(
                [[aside[a], *list(r)] for a, r in zip(acc.loc[hit, "account_id"],
                                                      acc.loc[hit, "reasons"], strict=True)],
                index=acc.index[hit], dtype=object)
    acc["enforce"] = enforce
    acc["level"] = 0
    acc.loc[acc["score"] >= float(s["watch_min_score"]), "level"] = LEVEL["watch"]
    acc.loc[acc["flagged"], "level"] = LEVEL["watch"]
    acc.loc[enforce, "level"] = LEVEL["throttle"]
    acc.loc[enforce & (acc["score"] >= float(s["block_min_score"])), "level"] = LEVEL["block"]
    acc["since"] = pd.Timestamp(linked_at)
    camps = pd.DataFrame({
        "campaign_id": [c["campaign_id"] for c in campaigns],
        "score": [float(c["score"]) for c in campaigns],
        "n_accounts": [int(c["n_accounts"]) for c in campaigns],
        "n_exchanges": [int(c["n_exchanges"]) for c in campaigns],
        "first_seen": [c["first_seen"] for c in campaigns],
        "last_seen": [c["last_seen"] for c in campaigns],
        "linked_at": pd.Series([pd.Timestamp(linked_at)] * len(campaigns),
                               dtype="datetime64[us]"),
        "doc": [json.dumps(c, default=str) for c in campaigns],
        "current": True})
    inds = pd.DataFrame(
        [(kind, str(v), c["campaign_id"]) for c in campaigns
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
                CAST(enforce AS INTEGER) FROM _acc WHERE level > 0
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
        if int(s["campaign_confirms"]) > 0:
            _confirm_by_campaign(con, int(s["confirm_runs"]), int(s["campaign_confirms"]))
        con.execute("INSERT OR IGNORE INTO indicators SELECT * FROM _inds")
        for name in ("_acc", "_camps", "_inds"):
            con.unregister(name)
        n = int(state.meta_in(con, "n_links", "0")) + 1
        State.set_meta(con, "n_links", n)


def _confirm_by_campaign(con: duckdb.DuckDBPyConnection, runs: int, confirms: int) -> None:
    """Confirm this run's enforceable members of a campaign in which at least `confirms`
    members are already confirmed (flagged in `runs` runs). Waiting for a second run
    guards against a cluster that one window made by coincidence; a campaign whose accounts
    recur run after run is no coincidence, and the heads it adds (each showing its
    behaviour itself, or it would be a bystander) need not wait for their own second
    run."""
    con.execute(f"""
        WITH cur AS (SELECT a.account_id, a.campaign_id, e.runs_flagged
                     FROM _acc a JOIN enforced e USING (account_id) WHERE a.enforce),
        sure AS (SELECT campaign_id FROM cur GROUP BY campaign_id
                 HAVING count(*) FILTER (WHERE runs_flagged >= {runs}) >= {confirms})
        UPDATE enforced SET runs_flagged = {runs} FROM cur
        WHERE enforced.account_id = cur.account_id AND enforced.runs_flagged < {runs}
          AND cur.campaign_id IN (SELECT campaign_id FROM sure)""")


def detect_folder(folder: Path, cfg: dict[str, Any], out: Path | None,
                  source: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The batch detection over the window files in FOLDER; writes the run directory to
    OUT when given. Returns the accounts' linking result and the campaigns (small,
    picklable)."""
    con = connect(memory_limit=cfg["engine"]["memory_limit"])
    try:
        ingest = _ingest_views(con, folder)
        session = DuckDBSession(con)
        det = detect.run(session, ingest, cfg)
        run_dir.finalize(session, det)
        if out is not None:
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            run_dir.write(tmp, det, ingest, {"exchanges": [source], "accounts": [],
                                             "releases": []}, cfg, engine="duckdb")
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            if out.exists():
                out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        con.close()
    # The members' own behaviour (shares in the window), to check them against their
    # campaign's (`bystanders`).
    own = det.features[["account_id", "n_exchanges", *[d for d in cmp.ANOMALY_DIMENSIONS
                                         if d in det.features.columns]]]
    accounts = det.accounts[["account_id", "score", "flagged", "campaign_id", "reasons"]]
    return accounts.merge(own, on="account_id", how="left"), det.campaigns


def _niceness(cfg: dict[str, Any]) -> int:
    """The niceness the detection runs at: `link_niceness` above the server's own."""
    return min(19, os.getpriority(os.PRIO_PROCESS, 0) + int(cfg["serve"]["link_niceness"]))


def _detect_child(conn: Connection, folder: Path, cfg: dict[str, Any],
                  out: Path | None, source: str, niceness: int) -> None:
    """Child process body: lower priority, detect, send the result (or the error) back."""
    if os.getpriority(os.PRIO_PROCESS, 0) < niceness:  # not started at it (not Linux)
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
    try:
        conn.send(("ok", detect_folder(folder, cfg, out, source)))
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _start_niced(proc: multiprocessing.process.BaseProcess, niceness: int) -> None:
    """Start PROC at NICENESS from its first instruction. On Linux niceness belongs to a
    thread and a process inherits its forking thread's: started from a short-lived thread
    at that niceness, the child imports its libraries (~2 s of CPU per run) at low
    priority too, where it used to do so at the server's until `os.nice` in its body,
    competing with the request path on small machines. Elsewhere (niceness per process)
    it starts as before and lowers its own priority."""
    if not sys.platform.startswith("linux"):
        proc.start()
        return
    failure: list[BaseException] = []

    def start() -> None:
        try:
            with suppress(OSError):  # else the child lowers its own, as elsewhere
                os.setpriority(os.PRIO_PROCESS, 0, niceness)  # this thread only (Linux)
            proc.start()
        except BaseException as exc:  # re-raised in the caller
            failure.append(exc)

    starter = threading.Thread(target=start, name="distillguard-link-start", daemon=True)
    starter.start()
    starter.join()
    if failure:
        raise failure[0]


class _Child:
    """One detection in a spawned process; `cancel` ends it (shutdown)."""

    def __init__(self) -> None:
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.cancelled = False

    def run(self, folder: Path, cfg: dict[str, Any], out: Path | None,
            source: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe(duplex=False)
        if self.cancelled:
            raise RuntimeError("linking cancelled")
        niceness = _niceness(cfg)
        self.proc = ctx.Process(target=_detect_child,
                                args=(theirs, folder, cfg, out, source, niceness),
                                name="distillguard-link", daemon=True)
        _start_niced(self.proc, niceness)
        theirs.close()
        if self.cancelled:  # close() came while it started
            self.proc.terminate()
        try:
            kind, result = mine.recv()
        except EOFError:
            raise RuntimeError("linking process ended without a result" +
                               (" (cancelled)" if self.cancelled else "")) from None
        finally:
            mine.close()
            self.proc.join()
        if kind != "ok":
            raise RuntimeError(result)
        return result

    def cancel(self) -> None:
        self.cancelled = True
        if self.proc is not None and self.proc.is_alive():
            self.proc.terminate()


def relink(state: State, cfg: dict[str, Any], write_files: bool = True,
           child: _Child | None = None) -> dict[str, Any]:
    """One linking run over the window, in this process or (CHILD) in a child process;
    returns what it found (for logs and replay)."""
    started = time.perf_counter()
    linked_at, folder, n_events = _window(state, cfg)
    out = state.run_dir if write_files else None
    args = (folder, cfg, out, str(state.path))
    try:
        accounts, campaigns = detect_folder(*args) if child is None else child.run(*args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    _store(state, accounts, campaigns, linked_at, cfg)
    seconds = time.perf_counter() - started
    with state.transaction(changes_facts=False) as c:
        State.set_meta(c, "last_link_seconds", f"{seconds:.2f}")
    return {"linked_at": linked_at, "exchanges": n_events,
            "campaigns": len(campaigns), "flagged": int(accounts["flagged"].sum()),
            "seconds": seconds}


class Linker:
    """Runs linking when due: inline (in the caller) or from one background thread that
    runs the detection in a child process."""

    def __init__(self, state: State, cfg: dict[str, Any], write_files: bool = True) -> None:
        self.state, self.cfg, self.write_files = state, cfg, write_files
        self.inline = cfg["serve"]["relink_mode"] == "inline"
        self._pool = None if self.inline else ThreadPoolExecutor(1, "distillguard-link")
        self._running: Future | None = None
        self._child: _Child | None = None
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
            self._child = _Child()
            self._running = self._pool.submit(self._background, self._child)
        return True

    def _background(self, child: _Child) -> None:
        try:
            self.last = relink(self.state, self.cfg, self.write_files, child)
            self.error = None
        except Exception as exc:  # the service keeps answering from the last run
            self.error = f"{type(exc).__name__}: {exc}"

    def wait(self) -> None:
        """Block until a background run in progress has finished (tests)."""
        if self._running is not None:
            self._running.result()

    def close(self) -> None:
        """Stop: a linking run under way is cancelled; its window's events are linked by
        the next run, due on the usual schedule."""
        if self._child is not None:
            self._child.cancel()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
