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

from datetime import datetime
from operator import itemgetter
from typing import Any

from distillguard.serve.state import State

ACTIONS = ("allow", "watch", "throttle", "block")
LEVEL = {a: i for i, a in enumerate(ACTIONS)}
REASONS_KEPT = 6
# What an account linking never gave a level has: (level, runs_flagged, campaign, score,
# reasons), as `enforced` would hold it.
_UNLINKED: tuple[int, int, None, None, None] = (0, 0, None, None, None)


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


def decide_batch(state: State, accounts: list[str], ips: list[str | None],
                 ts: list[datetime], cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Decisions for the accounts of a batch of stored events (columns of its good rows),
    by account; remembered in `decisions`. Reads the state's in-memory facts only, and
    runs the policy only for accounts some fact names (the others are allowed)."""
    facts = state.facts
    latest = dict(sorted(zip(accounts, ts, strict=True), key=itemgetter(1)))  # newest wins
    out = {a: {"decision": "allow", "reasons": [], "campaign_id": None, "score": None}
           for a in sorted(latest)}
    hits: dict[str, set[str]] = {}
    if facts.ips:
        for a, ip in zip(accounts, ips, strict=True):
            if ip in facts.ips:
                hits.setdefault(a, set()).add(ip)
    paying = {a for a in state.fingerprints.keys() & latest.keys()
              if state.fingerprints[a] in facts.payment} if facts.payment else set()
    for a in sorted(hits.keys() | paying | (facts.enforced.keys() & latest.keys())
                    | (state.allowlisted & latest.keys())):
        level, runs, campaign, score, reasons = facts.enforced.get(a, _UNLINKED)
        fingerprint = state.fingerprints.get(a)
        matched = hits.get(a, ())
        out[a] = decide({
            "allowlisted": a in state.allowlisted, "link_level": level, "runs_flagged": runs,
            "campaign_id": campaign, "score": score, "reasons": reasons,
            "pay_campaign": None if fingerprint is None else facts.payment.get(fingerprint),
            "ip": min(matched) if matched else None,
            "ip_campaign": min(facts.ips[ip] for ip in matched) if matched else None}, cfg)
    state.add_decisions(out, latest)
    return out
