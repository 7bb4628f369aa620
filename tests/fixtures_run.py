"""Writes a small, realistic detection run directory, so output tests need no detector.

Two campaigns (a 14-account coding harvest that pivots to a new model at once, and an
8-account reasoning harvest through education sign-ups), 26 benign accounts, two
allowlisted ones, one flagged account outside any campaign, one release.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

START = datetime(2026, 3, 2, tzinfo=UTC)
RELEASE = START + timedelta(days=3, hours=12)
# Raw identifying values the redaction tests look for in every output.
RAW_VALUES = (
    "203.0.113.7", "203.0.113.45", "2001:db8:5::17", "203.0.113.0/24", "2001:db8:5::/48",
    "198.51.100.23", "198.51.100.0/24", "quickmail-relay.example", "uni-mirror.example",
    "pf_7c1e9a44d2", "pf_51aa0b3e90",
)
CAMPAIGNS = ("cmp-001", "cmp-002")


def _accounts() -> dict[str, list[str]]:
    return {
        "cmp-001": [f"acct-a{i:02d}" for i in range(14)],
        "cmp-002": [f"acct-b{i:02d}" for i in range(8)],
        "benign": [f"acct-n{i:02d}" for i in range(26)],
        "permitted": ["acct-p00", "acct-p01"],
        "singleton": ["acct-s00"],
    }


def _campaigns(groups: dict[str, list[str]]) -> list[dict]:
    return [
        {
            "campaign_id": "cmp-001", "score": 0.97, "account_ids": groups["cmp-001"],
            "n_accounts": 14, "n_exchanges": 5210,
            "first_seen": "2026-03-02T01:00:00Z", "last_seen": "2026-03-06T22:00:00Z",
            "capabilities": {"coding": 0.62, "agentic_tool_use": 0.21, "reasoning_math": 0.12,
                             "chat_other": 0.05},
            "signals": [
                {"name": "synchrony", "value": 9.1,
                 "detail": "co-active in 1-minute buckets; null-model mean 0.4, sd 0.9"},
                {"name": "template_family", "value": 0.82,
                 "detail": "4 template families reused by 14 accounts"},
                {"name": "shared_payment", "value": 3,
                 "detail": "3 accounts share payment fingerprint pf_7c1e9a44d2"},
                {"name": "shared_cidr", "value": 11,
                 "detail": "11 accounts connect from 203.0.113.0/24 (4 unrelated accounts)"},
                {"name": "release_pivot", "value": 0.78,
                 "detail": "78% of traffic on atlas-3 within 24 h vs 6% of benign traffic"},
                {"name": "volume_inside_benign_range", "value": 84.2,
                 "detail": "median 84.2 exchanges per active day; the benign 99th percentile "
                           "is 225.0"},
                {"name": "mystery_statistic", "value": 1.5, "detail": "no guide written"},
            ],
            "indicators": {
                "ips": ["203.0.113.7", "203.0.113.45", "2001:db8:5::17"],
                "cidrs": ["203.0.113.0/24", "2001:db8:5::/48"],
                "asns": [64500],
                "payment_fingerprints": ["pf_7c1e9a44d2"],
                "email_domains": ["quickmail-relay.example"],
                "prompt_templates": ["tpl-3fa2", "tpl-77c0"],
                "user_agents": ["python-httpx/0.27 harvest/1.2"],
            },
        },
        {
            "campaign_id": "cmp-002", "score": 0.84, "account_ids": groups["cmp-002"],
            "n_accounts": 8, "n_exchanges": 1460,
            "first_seen": "2026-03-03T04:00:00Z", "last_seen": "2026-03-06T20:00:00Z",
            "capabilities": {"reasoning_math": 0.71, "grading_reward": 0.19,
                             "knowledge_qa": 0.10},
            "signals": [
                {"name": "cot_elicitation", "value": 0.71,
                 "detail": "71% of prompts ask for step-by-step reasoning vs 3% benign"},
                {"name": "shared_infrastructure", "value": 8,
                 "detail": "member links through email_domain (8), signup_burst (7); "
                           "sign-ups at uni-mirror.example"},
                {"name": "signup_burst", "value": 8, "detail": "8 sign-ups within 40 minutes"},
                {"name": "unusual_tool_share", "value": 0.5,
                 "detail": "50% of members exceed the benign 99% quantile of tool use"},
                {"name": "unusual_n_asns", "value": 0.0, "detail": "0% of members exceed ..."},
            ],
            "indicators": {
                "ips": ["198.51.100.23"], "cidrs": ["198.51.100.0/24"], "asns": [64511],
                "payment_fingerprints": ["pf_51aa0b3e90"],
                "email_domains": ["uni-mirror.example"],
                # The engine gives template objects with a raw example; outputs show ids only.
                "prompt_templates": [{"template_id": "tpl-c0de", "n_exchanges": 1000,
                                      "n_accounts": 8,
                                      "example": "Mail results to grader@uni-mirror.example"}],
            },
        },
    ]


def _write(table: dict, path: Path, schema: pa.Schema) -> None:
    pq.write_table(pa.table(table, schema=schema), path)


def build_run_dir(root: Path, *, releases: bool = True, optional: bool = True) -> Path:
    """Write the run directory under `root` and return it. `optional=False` writes only
    the three required files (a detector that produced no side tables)."""
    rng = np.random.default_rng(7)
    root.mkdir(parents=True, exist_ok=True)
    groups = _accounts()
    campaigns = _campaigns(groups)
    (root / "campaigns.json").write_text(json.dumps(campaigns, indent=2), "utf-8")
    run = {
        "distillguard_version": "0.1.0", "created_at": "2026-03-07T00:00:00Z",
        "engine": "duckdb",
        "inputs": {"exchanges": ["data/exchanges.parquet"],
                   "accounts": ["data/accounts.parquet"],
                   "releases": ["data/releases.parquet"] if releases else []},
        "signals": {"computed": ["synchrony", "template_family", "shared_payment",
                                 "cot_elicitation", "release_pivot"],
                    "skipped": {"response_similarity": "column 'response' is absent",
                                "tool_use": "column 'tool_names' is absent"}},
        "counts": {"exchanges_read": 9100, "exchanges_accepted": 9050, "quarantined": 50,
                   "accounts": 51, "flagged": 23, "campaigns": 2},
        "permitted_distillation": [
            {"account_id": "acct-p00", "n_exchanges": 2400, "score": 0.93},
            {"account_id": "acct-p01", "n_exchanges": 800, "score": 0.41},
        ],
        "config": {"linking": {"min_edge_weight": 0.5}},
    }
    (root / "run.json").write_text(json.dumps(run, indent=2), "utf-8")

    a_scores = np.linspace(0.99, 0.91, 14)
    b_scores = np.linspace(0.89, 0.72, 8)
    rows = [(acct, float(a_scores[i]), True, "cmp-001",
             ["synchrony:z=9.1", "template_family:reuse=0.82", "shared_payment:3_accounts",
              "ip24:203.0.113.0/24"]) for i, acct in enumerate(groups["cmp-001"])]
    rows += [(acct, float(b_scores[i]), True, "cmp-002",
              ["cot_elicitation:share=0.71", "email_domain:8_accounts"])
             for i, acct in enumerate(groups["cmp-002"])]
    rows += [(acct, 0.62, True, None, ["synchrony:z=4.2"]) for acct in groups["singleton"]]
    rows += [(acct, float(rng.uniform(0.01, 0.2)), False, None, [])
             for acct in groups["benign"] + groups["permitted"]]
    ids, scores, flagged, cids, reasons = (list(col) for col in zip(*rows, strict=True))
    _write({"account_id": ids, "score": scores, "flagged": flagged, "campaign_id": cids,
            "reasons": reasons}, root / "accounts.parquet",
           pa.schema([("account_id", pa.string()), ("score", pa.float64()),
                      ("flagged", pa.bool_()), ("campaign_id", pa.string()),
                      ("reasons", pa.list_(pa.string()))]))
    if not optional:
        return root

    n = len(ids)
    per_day = np.where(np.array([c is not None for c in cids]),
                       rng.uniform(60, 120, n), rng.lognormal(3.6, 0.9, n))
    path = ["education" if a.startswith("acct-b") else "standard" for a in ids]
    _write({"account_id": ids, "n_exchanges": (per_day * 5).astype(np.int64),
            "exchanges_per_active_day": per_day, "flagged": flagged, "campaign_id": cids,
            "hour_entropy": rng.uniform(1, 4, n), "verification_path": path},
           root / "account_features.parquet",
           pa.schema([("account_id", pa.string()), ("n_exchanges", pa.int64()),
                      ("exchanges_per_active_day", pa.float64()), ("flagged", pa.bool_()),
                      ("campaign_id", pa.string()), ("hour_entropy", pa.float64()),
                      ("verification_path", pa.string())]))

    a, b, nb = groups["cmp-001"], groups["cmp-002"], groups["benign"]
    links = [(a[i], a[(i + j) % len(a)], 2.0 + j / 10,
              ["ip", "payment"] if j == 1 else ["family", "ip_prefix"])
             for i in range(len(a)) for j in (1, 2, 5)]
    links += [(b[i], b[(i + 1) % len(b)], 1.5, ["email_domain", "signup_burst"])
              for i in range(len(b))]
    links += [(a[0], nb[1], 0.3, ["ip_prefix"]), (nb[0], nb[1], 0.2, ["ip_prefix"]),
              (nb[2], nb[3], 0.2, ["email_domain"])]
    src, dst, weight, kinds = (list(col) for col in zip(*links, strict=True))
    _write({"src": src, "dst": dst, "weight": weight, "kinds": kinds}, root / "edges.parquet",
           pa.schema([("src", pa.string()), ("dst", pa.string()), ("weight", pa.float64()),
                      ("kinds", pa.list_(pa.string()))]))

    hourly = []
    for h in range(5 * 24):
        hour = START + timedelta(hours=h)
        after = hour >= RELEASE
        for cid, base in (("cmp-001", 45), ("cmp-002", 12), (None, 30)):
            if cid == "cmp-002" and h < 28:
                continue
            day_cycle = 1.0 if cid else 0.5 + 0.5 * np.sin((h % 24) / 24 * 2 * np.pi)
            total = int(base * day_cycle + rng.integers(0, 5))
            share_new = (0.9 if cid == "cmp-001" else 0.3) if after else 0.0
            hourly += [(cid, hour, model, int(total * share))
                       for model, share in (("atlas-2", 1 - share_new), ("atlas-3", share_new))
                       if int(total * share) > 0]
    t_cid, t_hour, t_model, t_n = (list(col) for col in zip(*hourly, strict=True))
    _write({"campaign_id": t_cid, "hour": t_hour, "model": t_model, "n": t_n},
           root / "timeline.parquet",
           pa.schema([("campaign_id", pa.string()), ("hour", pa.timestamp("us", tz="UTC")),
                      ("model", pa.string()), ("n", pa.int64())]))

    templates = [
        ("cmp-001", "tpl-3fa2", 2100, 14, "Write a Python function that <NUM> ... and explain "
         "each step. Contact ops@quickmail-relay.example or see https://tracker.example/x.png"),
        ("cmp-001", "tpl-77c0", 1300, 12, "You are an agent with tools <LIST>. Plan the task: "
         "<script>alert('x')</script> from 203.0.113.7"),
        ("cmp-001", "tpl-91b4", 600, 9, "Refactor the following code for speed: <CODE>"),
        ("cmp-002", "tpl-c0de", 1000, 8, "Solve step by step and show all of your internal "
         "reasoning before the final answer: " + "x + y = <NUM>; " * 20),
    ]
    _write({k: [t[i] for t in templates] for i, k in enumerate(
        ("campaign_id", "template_id", "n_exchanges", "n_accounts", "example"))},
        root / "templates.parquet",
        pa.schema([("campaign_id", pa.string()), ("template_id", pa.string()),
                   ("n_exchanges", pa.int64()), ("n_accounts", pa.int64()),
                   ("example", pa.string())]))
    if releases:
        _write({"model": ["atlas-3"], "released_at": [RELEASE]}, root / "releases.parquet",
               pa.schema([("model", pa.string()), ("released_at", pa.timestamp("us", tz="UTC"))]))
    return root


def provenance_doc(campaign_id: str = "cmp-001", **overrides: object) -> dict:
    """A `distillguard provenance test --out` result for `campaign_id` (a learned one)."""
    key_id = f"campaign:{campaign_id}"
    doc = {
        "key_id": key_id, "campaign_id": campaign_id, "mode": "generation",
        "tokens_scored": 10349, "green_tokens": 2898, "green_fraction": 0.28, "gamma": 0.25,
        "z": 7.0, "p_value": 2.8e-12, "log10_p_value": -11.55, "verdict": "learned",
        "verdict_text": f"the text carries the watermark of key {key_id!r} (p = 2.8e-12 < 1e-05):"
                        " whoever produced it learned from text marked with that key; it does"
                        " not show who trained the model",
        "calibration": {"mean": -0.02, "sd": 0.94, "n_keys": 50, "ok": True},
        "pairs": {"candidate": 64000, "in_prompt": 120, "special": 300, "duplicate": 53231},
        "params": {"vocab_size": 2048, "greenlist_ratio": 0.25, "seeding_scheme": "lefthash",
                   "context_width": 1},
    }
    return {**doc, **overrides}


def write_provenance(run_dir: Path, name: str, doc: object) -> Path:
    """File `doc` as RUN_DIR/provenance/<name>.json (a string is written as is)."""
    path = run_dir / "provenance" / f"{name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), "utf-8")
    return path
