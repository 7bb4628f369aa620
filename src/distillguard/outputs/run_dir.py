"""Write a detection run directory: the contract outputs plus the evidence files the
report, the dashboard and a sceptical reader need (features, edges, timeline, templates).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ibis
import ibis.expr.types as ir
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard import __version__, config, linking
from distillguard import campaigns as cmp
from distillguard.contract import INDICATOR_KEYS
from distillguard.detect import Detection
from distillguard.engine.session import DuckDBSession
from distillguard.ingest import IngestReport

ACCOUNTS_SCHEMA = pa.schema([("account_id", pa.string()), ("score", pa.float64()),
                             ("flagged", pa.bool_()), ("campaign_id", pa.string()),
                             ("reasons", pa.list_(pa.string()))])
MAX_INDICATORS = 50
# Linking key kinds reported as campaign indicators, and their field in campaigns.json.
INDICATOR_FIELD = {"ip": "ips", "ip_prefix": "cidrs", "payment": "payment_fingerprints",
                   "email_domain": "email_domains"}
EXAMPLE_CHARS = 200


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).tz_localize(None).isoformat() + "Z"


def _indicators(session: DuckDBSession, cm: ir.Table, min_precision: float
                ) -> dict[str, dict[str, list[Any]]]:
    """Per campaign: keys shared by at least two members whose users are mostly (at least
    `min_precision`) campaign members, so blocking one would hit the campaign, not a
    public mail provider or a mobile carrier; most widely shared first, at most
    MAX_INDICATORS per kind. Counted and ranked in the engine: only the indicators come
    back (measured at 37.8M exchanges, the members' shared keys in pandas, filtered once
    per campaign, were most of the output stage and its memory peak)."""
    sh = session.table("shared")
    sh = sh.filter(sh.kind.isin([*INDICATOR_FIELD, "asn_day"]))
    j = sh.join(cm, "account_id")
    # One row per (account, kind, key) for these kinds (their keys are text): rows count
    # members.
    per = j.group_by([j.campaign_id, j.kind, j.key]).aggregate(m=j.count(), n=j.n.max())
    per = per.filter((per.m >= 2) & (per.m >= min_precision * per.n))
    rank = ibis.row_number().over(group_by=[per.campaign_id, per.kind],
                                  order_by=[ibis.desc(per.m), per.key])
    per = per.mutate(rank=rank)
    top = session.pandas(per.filter(per.rank < MAX_INDICATORS).select(
        "campaign_id", "kind", "key", "rank")).sort_values(["campaign_id", "kind", "rank"])
    out: dict[str, dict[str, list[Any]]] = {}
    for (cid, kind), keys in top.groupby(["campaign_id", "kind"])["key"].agg(list).items():
        found = out.setdefault(cid, _no_indicators())
        if kind == "asn_day":
            found["asns"] = sorted({int(k.split("@")[0]) for k in keys
                                    if k.split("@")[0].isdigit()})
        elif kind in INDICATOR_FIELD:
            found[INDICATOR_FIELD[kind]] = keys
    return out


def _no_indicators() -> dict[str, list[Any]]:
    return {"ips": [], "cidrs": [], "asns": [], "payment_fingerprints": [], "email_domains": [],
            "prompt_templates": []}


def finalize(session: DuckDBSession, det: Detection, cfg: dict[str, Any] | None = None) -> None:
    """Fill campaign statistics, indicators, timeline and template examples from the engine
    (`cfg` defaults to the packaged configuration)."""
    cfg = cfg or config.load()
    feats = det.features.set_index("account_id")
    camp_map = pd.DataFrame(
        [(a, c["campaign_id"]) for c in det.campaigns for a in c["account_ids"]],
        columns=["account_id", "campaign_id"])
    cm = session.register("campaign_members", camp_map if not camp_map.empty else
                          pd.DataFrame({"account_id": pd.Series(dtype=str),
                                        "campaign_id": pd.Series(dtype=str)}))
    indicators = _indicators(session, cm, float(cfg["campaigns"]["indicator_min_precision"]))
    for c in det.campaigns:
        m = feats.loc[c["account_ids"]].reset_index()
        c["n_accounts"] = len(m)
        c["n_exchanges"] = int(m["n_exchanges"].sum())
        c["first_seen"] = _iso(m["first_seen"].min())
        c["last_seen"] = _iso(m["last_seen"].max())
        c["capabilities"] = cmp.capability_mix(m)
        c["signals"] = [e.as_dict() for e in c.pop("_evidence")]
        c["indicators"] = indicators.get(c["campaign_id"]) or _no_indicators()
    xs = session.table("xs")
    j = xs.left_join(cm, "account_id")
    det.timeline = session.pandas(j.group_by(
        [j.campaign_id, j.ts.truncate("h").name("hour"), j.model]).aggregate(n=j.count())
        .order_by(["campaign_id", "hour", "model"]))
    if camp_map.empty or "template_id" not in xs.columns:
        return
    jj = xs.join(cm, "account_id").filter(xs.template_id.notnull())
    per = jj.group_by(["campaign_id", "template_id"]).aggregate(
        n_exchanges=jj.count(), n_accounts=jj.account_id.nunique(),
        sample=jj.exchange_id.min())
    # The ten most used templates per campaign, picked in the engine.
    per = per.mutate(rank=ibis.row_number().over(
        group_by=per.campaign_id, order_by=[ibis.desc(per.n_exchanges), per.template_id]))
    top = session.pandas(per.filter(per.rank < 10).drop("rank"))
    top = top.sort_values(["campaign_id", "n_exchanges", "template_id"],
                          ascending=[True, False, True], ignore_index=True)
    ids = session.register("sample_ids", top[["sample"]].rename(columns={"sample": "exchange_id"}))
    ex = session.table("exchanges")
    texts = session.pandas(ex.join(ids, "exchange_id").select(
        "exchange_id", example=ex.prompt.substr(0, EXAMPLE_CHARS)))
    top = top.merge(texts, left_on="sample", right_on="exchange_id", how="left")
    top["template_id"] = top["template_id"].astype(str)
    det.templates = top[["campaign_id", "template_id", "n_exchanges", "n_accounts", "example"]]
    for c in det.campaigns:
        rows = det.templates[det.templates["campaign_id"] == c["campaign_id"]]
        c["indicators"]["prompt_templates"] = [
            {"template_id": r.template_id, "n_exchanges": int(r.n_exchanges),
             "n_accounts": int(r.n_accounts), "example": r.example}
            for r in rows.itertuples(index=False)]


def write(out: Path, det: Detection, ingest: IngestReport, inputs: dict[str, list[str]],
          cfg: dict[str, Any], engine: str) -> dict[str, Path]:
    """Write every file of the run directory; returns their paths by name."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    acc = det.accounts.sort_values("account_id", ignore_index=True)
    pq.write_table(pa.Table.from_pandas(acc[list(ACCOUNTS_SCHEMA.names)], schema=ACCOUNTS_SCHEMA,
                                        preserve_index=False), out / "accounts.parquet")
    paths["accounts"] = out / "accounts.parquet"
    ordered = sorted(det.campaigns, key=lambda c: (-c["n_exchanges"], c["campaign_id"]))
    for c in ordered:
        for k in INDICATOR_KEYS:
            c["indicators"].setdefault(k, [])
    keys = ("campaign_id", "score", "account_ids", "n_accounts", "n_exchanges", "first_seen",
            "last_seen", "capabilities", "signals", "indicators")
    (out / "campaigns.json").write_text(json.dumps([{k: c[k] for k in keys} for c in ordered],
                                                   indent=2, default=str) + "\n")
    paths["campaigns"] = out / "campaigns.json"
    feats = det.features.merge(acc[["account_id", "flagged", "campaign_id"]], on="account_id")
    edges = pa.Table.from_pandas(det.edges.drop(columns="kinds"), preserve_index=False) \
        .append_column("kinds", linking.kind_lists(det.edges["kinds"]))
    for name, df in (("account_features", feats), ("edges", edges),
                     ("timeline", det.timeline), ("templates", det.templates),
                     ("releases", det.releases)):
        if name == "releases" and df.empty:
            continue
        table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, out / f"{name}.parquet")
        paths[name] = out / f"{name}.parquet"
    ex = ingest.tables["exchanges"]
    run = {
        "distillguard_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "engine": engine,
        "inputs": inputs,
        "signals": {"computed": sorted(set(det.plan.computed)), "skipped": det.plan.skipped},
        "counts": {"exchanges_read": ex.rows_read, "exchanges_accepted": ex.rows_accepted,
                   "quarantined": ingest.rows_quarantined, "accounts": len(acc),
                   "flagged": int(acc["flagged"].sum()), "campaigns": len(ordered)},
        "permitted_distillation": det.permitted,
        "organisation_use": det.organisations,
        "config": cfg,
    }
    (out / "run.json").write_text(json.dumps(run, indent=2, default=str) + "\n")
    paths["run"] = out / "run.json"
    return paths
