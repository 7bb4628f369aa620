"""Time `distillguard report` (write_all) on a large synthetic run directory.

Run by hand, numbers go to docs/report.md:
    .venv/bin/python bench/bench_report.py --accounts 1000000 --edges 3000000 --campaigns 20

The run directory is written with numpy/pyarrow (no detector): accounts with scores and
reasons, account features, a link graph, an hourly timeline over 30 days and 3 models,
templates, one release.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.outputs.report import write_all

START = datetime(2026, 1, 1, tzinfo=UTC)


def build(root: Path, n_accounts: int, n_edges: int, n_campaigns: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    ids = np.char.add("acct-", np.arange(n_accounts).astype(str))
    per_campaign = 200
    in_campaign = np.full(n_accounts, -1)
    in_campaign[: n_campaigns * per_campaign] = np.repeat(np.arange(n_campaigns), per_campaign)
    cids = pa.array([f"cmp-{c:03d}" if c >= 0 else None for c in in_campaign], pa.string())
    flagged = in_campaign >= 0
    score = np.where(flagged, rng.uniform(0.6, 1.0, n_accounts), rng.uniform(0, 0.3, n_accounts))
    reasons = pa.array([["synchrony:9.1", "shared_template_families:0.8"] if f else []
                        for f in flagged], pa.list_(pa.string()))
    pq.write_table(pa.table({"account_id": ids, "score": score, "flagged": flagged,
                             "campaign_id": cids, "reasons": reasons}),
                   root / "accounts.parquet")
    per_day = rng.lognormal(3.5, 1.0, n_accounts)
    pq.write_table(pa.table({"account_id": ids, "n_exchanges": (per_day * 10).astype(np.int64),
                             "exchanges_per_active_day": per_day, "flagged": flagged,
                             "campaign_id": cids}), root / "account_features.parquet")
    src = rng.integers(0, n_accounts, n_edges)
    dst = np.where(rng.random(n_edges) < 0.3,
                   src - src % per_campaign + rng.integers(0, per_campaign, n_edges),
                   rng.integers(0, n_accounts, n_edges))
    kinds = pa.array([["ip_prefix"], ["payment", "ip"], ["family"]] * (n_edges // 3)
                     + [["ip"]] * (n_edges % 3), pa.list_(pa.string()))
    pq.write_table(pa.table({"src": ids[src], "dst": ids[np.clip(dst, 0, n_accounts - 1)],
                             "weight": rng.uniform(0.1, 3, n_edges), "kinds": kinds}),
                   root / "edges.parquet")
    hours = np.array([START + timedelta(hours=h) for h in range(30 * 24)])
    keys = [f"cmp-{c:03d}" for c in range(n_campaigns)] + [None]
    rows = [(k, h, m) for k in keys for h in hours for m in ("atlas-2", "atlas-3", "lite")]
    cid_col, hour_col, model_col = zip(*rows, strict=True)
    pq.write_table(pa.table({"campaign_id": pa.array(cid_col, pa.string()),
                             "hour": pa.array(hour_col, pa.timestamp("us", tz="UTC")),
                             "model": model_col, "n": rng.integers(0, 500, len(rows))}),
                   root / "timeline.parquet")
    tpl = [(f"cmp-{c:03d}", f"tpl-{c}-{i}", 1000 - i, 50, "Solve step by step: <NUM> " * 8)
           for c in range(n_campaigns) for i in range(10)]
    t_cid, t_id, t_n, t_a, t_ex = zip(*tpl, strict=True)
    pq.write_table(pa.table({"campaign_id": t_cid, "template_id": t_id, "n_exchanges": t_n,
                             "n_accounts": t_a, "example": t_ex}), root / "templates.parquet")
    pq.write_table(pa.table({"model": ["atlas-3"], "released_at": pa.array(
        [START + timedelta(days=12)], pa.timestamp("us", tz="UTC"))}), root / "releases.parquet")
    campaigns = [{
        "campaign_id": f"cmp-{c:03d}", "score": 0.9, "n_accounts": per_campaign,
        "account_ids": ids[c * per_campaign:(c + 1) * per_campaign].tolist(),
        "n_exchanges": 50_000, "first_seen": "2026-01-01T00:00:00Z",
        "last_seen": "2026-01-30T23:00:00Z", "capabilities": {"coding": 0.7, "writing": 0.3},
        "signals": [{"name": "synchrony", "value": 9.1, "detail": "z against null model"}],
        "indicators": {"ips": [f"203.0.{c}.{i}" for i in range(20)], "cidrs": [f"203.0.{c}.0/24"],
                       "asns": [64500 + c], "payment_fingerprints": [f"pf_{c:04d}"],
                       "email_domains": [f"d{c}.example"], "prompt_templates": [f"tpl-{c}-0"]},
    } for c in range(n_campaigns)]
    (root / "campaigns.json").write_text(json.dumps(campaigns))
    (root / "run.json").write_text(json.dumps({
        "distillguard_version": "bench", "created_at": "2026-02-01T00:00:00Z",
        "engine": "duckdb", "inputs": {}, "signals": {"computed": ["synchrony"], "skipped": {}},
        "counts": {"accounts": n_accounts}, "permitted_distillation": [], "config": {}}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--accounts", type=int, default=200_000)
    ap.add_argument("--edges", type=int, default=600_000)
    ap.add_argument("--campaigns", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build(root, args.accounts, args.edges, args.campaigns)
        t1 = time.perf_counter()
        paths = write_all(root, redact_key=b"bench-key-0123456789")
        t2 = time.perf_counter()
        sizes = {k: p.stat().st_size for k, p in paths.items()}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"accounts={args.accounts:,} edges={args.edges:,} campaigns={args.campaigns}: "
          f"build {t1 - t0:.1f} s, report {t2 - t1:.1f} s, peak RSS {peak:,.0f} MiB, "
          f"sizes {sizes}")


if __name__ == "__main__":
    main()
