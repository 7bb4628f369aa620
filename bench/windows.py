"""What a linking run of `distillguard serve` can see early in a campaign: the batch
detection over a scenario's first H hours, for several H, per true operator.

For each window it writes the scenario's exchanges before the cut, the accounts seen in
them and the releases before it (the files a linking run detects over), runs
`serve.link.detect_folder` on them (the linking run's own detection), and prints per
operator the accounts active and flagged, and the best campaign holding its accounts with
its behaviour and coordination signals; then the benign accounts flagged. Run by hand
(docs/serve.md, "Replay"); it answers "when could any policy first act on this operator,
and on what evidence" without a replay.

    .venv/bin/python bench/windows.py --scenario-dir D --hours 1,1.5,2,3,4,6 [--config C]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from distillguard import config
from distillguard.serve.link import detect_folder

SIGNALS = ("unusual_", "release_pivot", "shared_infrastructure", "shared_template_families",
           "shared_vocabulary", "synchrony")


def _window(scenario: Path, exchanges: pa.Table, cut: object, folder: Path) -> None:
    """The exchanges before CUT, the accounts seen in them and the releases before it."""
    x = exchanges.filter(pc.less(exchanges["ts"], pa.scalar(cut, exchanges["ts"].type)))
    pq.write_table(x, folder / "exchanges.parquet")
    accounts = pq.read_table(scenario / "accounts.parquet")
    seen = pc.unique(x["account_id"])
    pq.write_table(accounts.filter(pc.is_in(accounts["account_id"], seen)),
                   folder / "accounts.parquet")
    releases = pq.read_table(scenario / "releases.parquet")
    pq.write_table(releases.filter(pc.less(releases["released_at"],
                                           pa.scalar(cut, releases["released_at"].type))),
                   folder / "releases.parquet")


def _summary(accounts: object, campaigns: list[dict], truth: dict[str, str],
             active: set[str]) -> dict[str, dict]:
    """Per operator (and "benign"): accounts active, flagged, and its best campaign."""
    flagged = set(accounts.loc[accounts["flagged"], "account_id"])
    out: dict[str, dict] = {}
    for op in sorted({truth.get(a, "benign") for a in active}):
        ids = {a for a in active if truth.get(a, "benign") == op}
        best = max((c for c in campaigns if ids & set(c["account_ids"])),
                   key=lambda c: c["score"], default=None)
        out[op] = {"active": len(ids), "flagged": len(ids & flagged)}
        if best is not None and op != "benign":
            out[op]["campaign"] = {
                "score": round(best["score"], 3), "accounts": len(best["account_ids"]),
                "signals": {s["name"]: s["value"] for s in best["signals"]
                            if s["name"].startswith(SIGNALS) and s["value"]}}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenario-dir", type=Path, required=True)
    ap.add_argument("--hours", required=True, help="comma-separated window lengths")
    ap.add_argument("--config", type=Path)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    cfg = config.load(args.config)
    truth_t = pq.read_table(args.scenario_dir / "truth.parquet").to_pandas()
    truth = {a: o for a, o in zip(truth_t["account_id"], truth_t["operator"], strict=True)
             if isinstance(o, str)}
    exchanges = ds.dataset(args.scenario_dir / "exchanges").to_table()
    start = pc.min(exchanges["ts"]).as_py()
    result = {}
    for h in (float(v) for v in args.hours.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            _window(args.scenario_dir, exchanges, start + timedelta(hours=h), folder)
            active = set(pq.read_table(folder / "exchanges.parquet", columns=["account_id"])
                         ["account_id"].to_pylist())
            accounts, campaigns = detect_folder(folder, cfg, None, str(args.scenario_dir))
        result[h] = _summary(accounts, campaigns, truth, active)
        for op, s in result[h].items():
            c = s.get("campaign")
            shown = (f"  campaign {c['accounts']} accounts, score {c['score']}: "
                     + ", ".join(f"{k} {v:.3g}" for k, v in c["signals"].items())) if c else ""
            print(f"{h:6.1f} h  {op:24s} {s['flagged']:4d} of {s['active']:4d} flagged{shown}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
