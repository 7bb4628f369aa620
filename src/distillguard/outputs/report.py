"""`distillguard report`: report.html, campaigns.md, indicators.stix.json, enforcement.csv.

`write_all` is the one entry point (the CLI, `detect` and `./dev demo` call it). It opens
the run directory, builds one redacted view, and hands it to each writer; this module
also gathers the per-campaign evidence the HTML report shows (queried per campaign from
DuckDB views, so a large run is never loaded row by row into Python).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distillguard import __version__, config
from distillguard.outputs import charts
from distillguard.outputs.enforcement import enforcement_table, write_enforcement
from distillguard.outputs.explain import explain, reading_guide
from distillguard.outputs.rundir import RunDir, open_run
from distillguard.outputs.stix import write_stix
from distillguard.outputs.summary_md import write_markdown
from distillguard.outputs.templating import jinja_env
from distillguard.outputs.view import RunView, make_view

OUTPUT_FILES = {
    "report": "report.html",
    "campaigns": "campaigns.md",
    "stix": "indicators.stix.json",
    "enforcement": "enforcement.csv",
}
Progress = Callable[[str], None]
BENIGN_SAMPLE = 200_000  # benign accounts drawn in the volume histogram (seeded sample)


def _releases(rd: RunDir) -> list[tuple[str, datetime]]:
    if not rd.has("releases"):
        return []
    rows = rd.query("SELECT model, released_at FROM releases ORDER BY released_at").fetchall()
    return [(m, pd.Timestamp(t).tz_localize(None).to_pydatetime()) for m, t in rows]


def _hourly(df: pd.DataFrame, column: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Long (hour, key, n) rows to a dense hourly grid: hours, {key: counts}."""
    if df.empty:
        return np.array([], dtype="datetime64[h]"), {}
    hours = pd.to_datetime(df["hour"], utc=True).dt.tz_localize(None)
    wide = df.assign(hour=hours).pivot_table(index="hour", columns=column, values="n",
                                             aggfunc="sum", fill_value=0)
    grid = pd.date_range(wide.index.min(), wide.index.max(), freq="h")
    wide = wide.reindex(grid, fill_value=0)
    return grid.to_pydatetime(), {str(k): wide[k].to_numpy() for k in wide.columns}


def _overview_timeline(rd: RunDir, releases: list[tuple[str, datetime]]) -> str | None:
    if not rd.has("timeline"):
        return None
    inside, outside = "detected campaigns", "all other traffic"
    df = rd.query(
        f"SELECT hour, CASE WHEN campaign_id IS NULL THEN '{outside}' ELSE '{inside}' END "
        "AS part, sum(n) AS n FROM timeline GROUP BY ALL ORDER BY hour"
    ).df()
    hours, series = _hourly(df, "part")
    return charts.timeline_chart(hours, series, releases, "All traffic, exchanges per hour",
                                 {inside: charts.CAMPAIGN_COLOR, outside: charts.BENIGN_COLOR})


def _campaign_timeline(rd: RunDir, cid: str, releases: list[tuple[str, datetime]]
                       ) -> str | None:
    if not rd.has("timeline"):
        return None
    df = rd.query("SELECT hour, model, sum(n) AS n FROM timeline WHERE campaign_id = ? "
                  "GROUP BY ALL ORDER BY hour", [cid]).df()
    if df.empty:
        return None
    hours, series = _hourly(df, "model")
    return charts.timeline_chart(hours, series, releases, f"{cid}: exchanges per hour by model")


def _benign_volume(rd: RunDir) -> np.ndarray:
    if not rd.has("account_features"):
        return np.array([])
    return rd.query(
        "SELECT exchanges_per_active_day FROM account_features "
        "WHERE NOT flagged AND campaign_id IS NULL AND exchanges_per_active_day > 0 "
        f"USING SAMPLE reservoir({BENIGN_SAMPLE} ROWS) REPEATABLE (42)"
    ).fetchnumpy()["exchanges_per_active_day"].astype(float)


def _volume(rd: RunDir, cid: str, benign: np.ndarray, quantile: float) -> dict[str, Any] | None:
    if not rd.has("account_features") or not len(benign):
        return None
    mine = rd.query("SELECT exchanges_per_active_day AS v FROM account_features "
                    "WHERE campaign_id = ? AND v > 0", [cid]).fetchnumpy()["v"].astype(float)
    if not len(mine):
        return None
    limit = float(np.quantile(benign, quantile))
    stopped = int((mine > limit).sum())
    label = f"limit at benign p{quantile * 100:g} = {limit:,.0f}/day"
    return {
        "chart": charts.volume_chart(benign, mine, limit, label),
        "limit": limit, "quantile": quantile, "stopped": stopped, "n": len(mine),
        "median": float(np.median(mine)),
        "median_pct": float((benign < np.median(mine)).mean()),
    }


def _graph(rd: RunDir, cid: str, cfg: dict[str, Any]) -> dict[str, Any] | None:
    if not rd.has("edges"):
        return None
    rd.query("CREATE OR REPLACE TEMP TABLE members AS SELECT account_id FROM accounts "
             "WHERE campaign_id = ? ORDER BY score DESC, account_id LIMIT ?",
             [cid, int(cfg["graph_max_nodes"])])
    edges = rd.query(
        "SELECT src, dst, weight, kinds FROM edges "
        "WHERE src IN (SELECT account_id FROM members) OR dst IN (SELECT account_id FROM members)"
        " ORDER BY src, dst"
    ).fetchall()
    edges = [(s, d, w, charts.dominant_kind(k)) for s, d, w, k in edges]
    members = [r[0] for r in rd.query("SELECT account_id FROM members ORDER BY account_id")
               .fetchall()]
    inside = set(members)
    strength: Counter[str] = Counter()
    for s, d, w, _ in edges:
        for node in {s, d} - inside:
            strength[node] += w
    outside = sorted(strength, key=lambda n: (-strength[n], n))[: int(cfg["graph_max_outside"])]
    kept = set(outside) | inside
    drawn = [e for e in edges if e[0] in kept and e[1] in kept]
    return {"chart": charts.graph_chart(members, sorted(outside), drawn),
            "n_edges": len(drawn), "n_outside": len(outside),
            "kinds": Counter(k for *_, k in drawn).most_common()}


def _accounts(view: RunView, cid: str) -> list[dict[str, Any]]:
    rows = view.rd.query(
        "SELECT account_id, score, flagged, reasons FROM accounts WHERE campaign_id = ? "
        "ORDER BY score DESC, account_id LIMIT ?", [cid, int(view.cfg["accounts_listed"])]
    ).fetchall()
    return [{"account_id": a, "score": s, "flagged": f,
             "reasons": [view.redactor.text(r) for r in (rs or [])]} for a, s, f, rs in rows]


def _signal_rows(signals: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Signals with their explanation; a repeated explanation points to its first row."""
    first: dict[str, str] = {}
    rows = []
    for sig in signals:
        how = explain(str(sig.get("name")))
        rows.append({**sig, "how": how, "same_as": first.get(how)})
        first.setdefault(how, str(sig.get("name")))
    return rows


def campaign_sections(view: RunView, releases: list[tuple[str, datetime]],
                      progress: Progress = lambda _: None) -> list[dict[str, Any]]:
    """Everything the report shows per campaign, charts included."""
    rd, cfg = view.rd, view.cfg
    benign = _benign_volume(rd)
    sections = []
    for i, c in enumerate(view.campaigns, 1):
        cid = str(c["campaign_id"])
        progress(f"charts for campaign {i}/{len(view.campaigns)} ({cid})")
        caps = {k: float(v) for k, v in (c.get("capabilities") or {}).items() if float(v) > 0}
        sections.append({
            "c": c,
            "signals": _signal_rows(c.get("signals") or []),
            "capability_chart": charts.capability_chart(caps) if caps else None,
            "timeline_chart": _campaign_timeline(rd, cid, releases),
            "volume": _volume(rd, cid, benign, float(cfg["volume_limit_quantile"])),
            "graph": _graph(rd, cid, cfg),
            "accounts": _accounts(view, cid),
            "templates": view.templates(cid),
            "provenance": view.provenance.get(cid),
        })
    return sections


def render_html(view: RunView, enforcement_counts: dict[str, int],
                progress: Progress = lambda _: None) -> str:
    """The whole report page (charts inline)."""
    rd = view.rd
    releases = _releases(rd)
    names = [str(s.get("name")) for c in view.campaigns for s in c.get("signals") or []]
    names += view.run.get("signals", {}).get("computed", [])
    return jinja_env(autoescape=True).get_template("report.html.j2").render(
        run=view.run, cfg=view.cfg, campaigns=campaign_sections(view, releases, progress),
        redacted=view.redacted, overview_timeline=_overview_timeline(rd, releases),
        releases=releases, missing=rd.missing, guide=reading_guide(names),
        warnings=view.warnings,
        enforcement=enforcement_counts, version=__version__,
        generated=view.run.get("created_at"),
    )


def write_all(run_dir: Path | str, out_dir: Path | str | None = None,
              redact_key: bytes | None = None,
              cfg: dict[str, Any] | None = None,
              progress: Progress = lambda _: None) -> dict[str, Path]:
    """Write the four outputs for RUN_DIR into OUT_DIR (default RUN_DIR); return their paths.

    With `redact_key`, IPs, CIDRs, e-mail domains and payment fingerprints are keyed
    hashes in every output. `cfg` is a full configuration (`config.load()` by default);
    `progress` receives a short message before each step (the charts take the time).
    """
    rd = open_run(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else rd.path
    out.mkdir(parents=True, exist_ok=True)
    view = make_view(rd, redact_key, (cfg or config.load())["report"])
    table = enforcement_table(view)
    counts = Counter(table.column("suggested_action").to_pylist())
    paths = {k: out / name for k, name in OUTPUT_FILES.items()}
    paths["report"].write_text(render_html(view, dict(counts), progress), "utf-8")
    progress("campaigns.md")
    write_markdown(view, paths["campaigns"], dict(counts))
    progress("indicators.stix.json")
    write_stix(view, paths["stix"])
    write_enforcement(table, paths["enforcement"])
    rd.db.close()
    return paths
