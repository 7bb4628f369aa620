"""The decision policy: what a gateway should do with an account's next request.

Levels, weakest first: allow, watch, throttle, block. An account's level is the strongest of
- what linking said about it (kept in `enforced`, sticky): a member of a flagged campaign
  is throttled, blocked from `block_min_score`, once `confirm_runs` linking runs flagged
  it or at once from `confirm_skip_score` (watched before: one run's cluster can be a
  coincidence of the window); an
  unflagged account scoring at least `watch_min_score` is watched;
- a flagged campaign's indicators it carries now: its payment fingerprint (throttle by
  default) or a rare IP the campaign's accounts shared (watch by default).
Allowlisted accounts (permitted to train on outputs) are always allowed.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from distillguard.serve.state import State

ACTIONS = ("allow", "watch", "throttle", "block")
LEVEL = {a: i for i, a in enumerate(ACTIONS)}
REASONS_KEPT = 6

# Per subject account: what linking and the indicators say about it.
_FACTS = """
WITH s AS (SELECT account_id, list(DISTINCT ip) FILTER (WHERE ip IS NOT NULL) AS ips,
                  max(ts) AS ts
           FROM _subjects GROUP BY account_id),
pay AS (SELECT m.account_id, min(i.campaign_id) AS campaign_id
        FROM account_meta m JOIN indicators i
          ON i.kind = 'payment_fingerprint' AND i.value = m.payment_fingerprint
        WHERE m.account_id IN (SELECT account_id FROM s) GROUP BY ALL),
ipx AS (SELECT u.account_id, min(i.value) AS ip, min(i.campaign_id) AS campaign_id
        FROM (SELECT account_id, unnest(ips) AS ip FROM s) u
        JOIN indicators i ON i.kind = 'ip' AND i.value = u.ip GROUP BY ALL)
SELECT s.account_id, s.ts, coalesce(m.allowlisted, false) AS allowlisted,
       coalesce(e.level, 0) AS link_level, coalesce(e.runs_flagged, 0) AS runs_flagged,
       e.campaign_id, e.score, e.reasons,
       pay.campaign_id AS pay_campaign, ipx.ip AS ip, ipx.campaign_id AS ip_campaign
FROM s LEFT JOIN enforced e USING (account_id) LEFT JOIN account_meta m USING (account_id)
       LEFT JOIN pay USING (account_id) LEFT JOIN ipx USING (account_id)
ORDER BY s.account_id
"""


def decide(facts: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """One account's decision and reasons (strongest first) from its facts row."""
    if facts["allowlisted"]:
        return {"decision": "allow", "reasons": ["allowlisted"], "campaign_id": None,
                "score": facts["score"]}
    level, campaign, reasons = int(facts["link_level"]), facts["campaign_id"], []
    confirm = int(cfg["confirm_runs"])
    confirmed = (int(facts["runs_flagged"]) >= confirm
                 or (facts["score"] or 0.0) >= float(cfg["confirm_skip_score"]))
    if level >= LEVEL["throttle"] and not confirmed:
        level = LEVEL["watch"]
        reasons.append(f"campaign_candidate:{campaign} ({facts['runs_flagged']} of {confirm} "
                       "linking runs)")
    elif level >= LEVEL["throttle"]:
        reasons.append(f"campaign_member:{campaign}")
    elif level == LEVEL["watch"]:
        reasons.append(f"score:{facts['score']:.3g}")
    reasons += list(facts["reasons"] or [])
    for hit, action, text in (
            (facts["pay_campaign"], cfg["indicator_payment_action"],
             f"campaign_payment_fingerprint:{facts['pay_campaign']}"),
            (facts["ip_campaign"], cfg["indicator_ip_action"],
             f"campaign_ip:{facts['ip']}@{facts['ip_campaign']}")):
        if hit is None:
            continue
        reasons.insert(0 if LEVEL[action] > level else len(reasons), text)
        if LEVEL[action] > level:
            level, campaign = LEVEL[action], hit
    return {"decision": ACTIONS[level], "reasons": reasons[:REASONS_KEPT],
            "campaign_id": campaign, "score": facts["score"]}


def decide_batch(state: State, events: pa.Table, cfg: dict[str, Any]) -> dict[str, dict]:
    """Decisions for the accounts of a batch of stored events; remembered in `decisions`."""
    subjects = events.select(["account_id", "ip", "ts"])
    with state.transaction() as con:
        con.register("_subjects", subjects)
        cur = con.execute(_FACTS)
        names = [d[0] for d in cur.description]
        facts = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        con.unregister("_subjects")
        out = {f["account_id"]: decide(f, cfg) for f in facts}
        if out:
            rows = pa.table({
                "account_id": list(out),
                "decision": [d["decision"] for d in out.values()],
                "reasons": pa.array([d["reasons"] for d in out.values()], pa.list_(pa.string())),
                "campaign_id": pa.array([d["campaign_id"] for d in out.values()], pa.string()),
                "decided_at": [f["ts"] for f in facts]})
            con.register("_decided", rows)
            con.execute("INSERT OR REPLACE INTO decisions SELECT * FROM _decided")
            con.unregister("_decided")
    return out
