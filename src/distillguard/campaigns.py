"""From clusters to campaigns: evidence per cluster, a score, members, reasons, indicators.

A cluster becomes a campaign when it shows both halves of a distillation operation:
*coordination* (several accounts tied by rare shared keys, or synchronised beyond the
null model) and *extraction content* (prompts that elicit reasoning, grading or safe
rewrites, or a few template families filled over and over by several members). Either
half alone describes ordinary traffic: campus labs and carrier NAT share networks;
evaluation harnesses and batch jobs repeat templates. Each piece of evidence is kept
with its statistic so a reader can check it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from distillguard.contract import CAPABILITIES
from distillguard.signals.timing import Synchrony


@dataclass
class Evidence:
    """One campaign signal: name, value, a readable detail, and its strength in [0, 1]."""

    name: str
    value: float
    detail: str
    strength: float
    threshold: float | None = None  # the reference a behaviour was measured against

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "value": round(float(self.value), 6), "detail": self.detail}
        if self.threshold is not None:
            out["threshold"] = round(float(self.threshold), 6)
        return out


# Account behaviours in which harvesting stands out, compared with a reference made of the
# accounts that no coordination evidence ties to others (mostly ordinary users). Volume
# is deliberately absent: campaigns keep per-account volume inside the benign range.
ANOMALY_DIMENSIONS: dict[str, str] = {
    "extraction_share": "share of prompts eliciting reasoning, grading or safe rewrites",
    "n_asns": "distinct ASNs the account's traffic came from (proxy rotation)",
    "thinking_share": "share of requests asking for extended thinking",
    "output_input_ratio": "output tokens harvested per input token",
    "image_share": "share of requests carrying an image",
    "tool_share": "share of requests defining tools",
    "task_share": "share of instruction tasks sent once (a harvest of instruction items)",
}


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    ok = ~np.isnan(values)
    values, weights = values[ok], weights[ok]
    if not len(values):
        return float("nan")
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q * cum[-1], side="left")])


def reference_thresholds(features: pd.DataFrame, weights: np.ndarray,
                         quantile: float) -> dict[str, float]:
    """Per behaviour, the `quantile` of all accounts where each account weighs 1/(size of
    its cluster): every independent actor counts once, so a campaign of thousands of
    accounts cannot make its own behaviour look ordinary (the null model)."""
    out = {}
    for dim in ANOMALY_DIMENSIONS:
        if dim in features and features[dim].notna().any():
            out[dim] = _weighted_quantile(conservative(features, dim), weights, quantile)
    return out


SHARE_DIMENSIONS = ("extraction_share", "thinking_share", "image_share", "tool_share",
                    "task_share")


def wilson_lower(share: np.ndarray, n: np.ndarray, z: float) -> np.ndarray:
    """Wilson lower bound of a share observed over `n` exchanges, at `z`."""
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    v = np.asarray(share, dtype=float)
    centre = v + z * z / (2 * n)
    margin = z * np.sqrt(np.maximum(v * (1 - v), 0) / n + z * z / (4 * n * n))
    return (centre - margin) / (1 + z * z / n)


def conservative(members: pd.DataFrame, dim: str, z: float = 1.96) -> np.ndarray:
    """A member's value on `dim`, made conservative for shares: the Wilson lower bound, so
    an account with one exchange cannot look extreme by chance."""
    v = members[dim].to_numpy(dtype=float)
    if dim not in SHARE_DIMENSIONS:
        return v
    return wilson_lower(v, members["n_exchanges"].to_numpy(dtype=float), z)


def leaning(members: pd.DataFrame, thresholds: dict[str, float], dim: str,
            min_hits: int) -> np.ndarray:
    """Members that lean toward a share behaviour: their own share is above the reference
    threshold, from at least `min_hits` exchanges doing it (one unusual exchange is an
    anecdote), though maybe from too few exchanges to show it on their own."""
    if dim not in SHARE_DIMENSIONS:
        return np.zeros(len(members), dtype=bool)
    v = np.nan_to_num(members[dim].to_numpy(dtype=float))
    hits = v * members["n_exchanges"].to_numpy(dtype=float)
    return (v > thresholds[dim]) & (hits >= min_hits - 1e-9)


# A pooled test needs this many leaning members: the heaviest is left out of the pool, so
# the evidence still comes from several accounts.
POOL_MIN_MEMBERS = 3


@dataclass(frozen=True)
class Pool:
    """How members too young to show a behaviour alone are pooled (`above`)."""

    min_hits: int  # exchanges doing it for a member to lean toward it (`leaning`)
    max_exchanges: int  # members with at least this many exchanges are not young


def above(members: pd.DataFrame, thresholds: dict[str, float], dim: str,
          z: float = 1.96, pool: Pool | None = None) -> np.ndarray:
    """Which members exceed the reference threshold on `dim`: conservatively, shares at
    the Wilson lower bound for `z`. With `pool`, also the young members (fewer than
    `max_exchanges` exchanges) that lean toward it (`leaning`) when their exchanges pooled
    clear the threshold at `z` without the heaviest of them: a fresh campaign's accounts
    each have a handful of exchanges, too few to stand out alone, though together they
    plainly do. Leaving the heaviest out keeps one account from carrying a group of light
    ones. Only young accounts are pooled: an account with more exchanges has had the
    chance to show the behaviour alone, and pooling a few ordinary heavy accounts would
    turn a small excess over the reference into significance by volume alone. And only
    while the group cannot show it otherwise: when at least three members exceed the
    reference on their own, they are the ones (an ordinary account that happens to lean
    the same way is not pulled into an established campaign)."""
    own = np.nan_to_num(conservative(members, dim, z), nan=-np.inf) > thresholds[dim]
    if pool is None or own.sum() >= POOL_MIN_MEMBERS:
        return own
    n_all = members["n_exchanges"].to_numpy(dtype=float)
    lean = leaning(members, thresholds, dim, pool.min_hits) & (n_all < pool.max_exchanges)
    if lean.sum() < POOL_MIN_MEMBERS:
        return own
    n = n_all[lean]
    hits = np.nan_to_num(members[dim].to_numpy(dtype=float))[lean] * n
    rest = np.ones(len(n), dtype=bool)
    rest[int(np.argmax(n))] = False
    pooled = wilson_lower(hits[rest].sum() / n[rest].sum(), n[rest].sum(), z)
    return own | lean if pooled > thresholds[dim] else own


def anomaly(members: pd.DataFrame, thresholds: dict[str, float],
            min_members: int = 1, pooled: dict[str, Pool] | None = None,
            rotating: np.ndarray | None = None, supporting: frozenset[str] = frozenset()
            ) -> dict[str, float]:
    """Per behaviour, the share of the cluster's traffic sent by members above the reference
    threshold (`above`, pooled for the behaviours in `pooled`; traffic-weighted, so a
    distiller hiding in a pool of customers still shows); 0 unless at least `min_members`
    members are above it: a campaign is several accounts doing the unusual thing, not one
    or two heavy users of an ordinary product. `rotating` marks the members above the
    reference on a `supporting` behaviour (proxy rotation): on the other behaviours they
    count at their point estimate, two indications together (the rule that makes them
    members, `detect._shows`)."""
    n = members["n_exchanges"].to_numpy(dtype=float)
    total = max(n.sum(), 1.0)
    out = {}
    for d in thresholds:
        if d in members:
            hit = above(members, thresholds, d, pool=(pooled or {}).get(d))
            if rotating is not None and d not in supporting:
                hit |= rotating & above(members, thresholds, d, 0.0)
            out[d] = float(n[hit].sum() / total) if hit.sum() >= min_members else 0.0
    return out


@dataclass
class ClusterFacts:
    """What the pipeline measured about one cluster, gathered before scoring."""

    cluster: int
    members: pd.DataFrame  # account feature rows of the members
    family_share: float  # share of member exchanges on template families shared in-cluster
    member_family_share: pd.Series  # per member account
    synchrony: Synchrony
    infra_kinds: dict[str, int]  # member pairs linked per infrastructure kind
    vocabulary_pairs: int  # member pairs sharing template families beyond chance
    pivot: tuple[float, float] | None  # (cluster share on new model in 24h, others' share)
    benign_volume_p99: float
    anomalies: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    # Members with a shared-infrastructure link to another member (the others are tied to
    # the cluster by content alone).
    infra_linked: frozenset[str] = frozenset()
    # Per member: whether it moved to the release of `pivot` itself (None: no release).
    member_pivot: pd.Series | None = None
    # `anomalies` of the `content_behaviours` measured on the members that fill the
    # cluster's templates (empty when it is not template-driven).
    filler_anomalies: dict[str, float] = field(default_factory=dict)


def behaviour_of(evidence_name: str) -> str | None:
    """The behaviour (`ANOMALY_DIMENSIONS`) an `unusual_*` or `fillers_*` evidence is
    about; None for the others."""
    for prefix in ("unusual_", "fillers_"):
        if evidence_name.startswith(prefix):
            return evidence_name[len(prefix):]
    return None


def anomaly_floor(dim: str, c: dict[str, Any]) -> float:
    """The share of a cluster's traffic from members above the reference below which a
    behaviour is not evidence: higher for request shape, which a team's settings give to
    part of its members (`shape_behaviours`)."""
    return float(c["shape_anomaly_floor"] if dim in c["shape_behaviours"]
                 else c["anomaly_floor"])


def _ramp(x: float, floor: float, full: float) -> float:
    """0 at or below `floor`, 1 at or above `full`, linear between."""
    return min(1.0, max(0.0, (x - floor) / (full - floor)))


def _weighted(members: pd.DataFrame, col: str) -> float:
    n = members["n_exchanges"].to_numpy(dtype=float)
    if col not in members or n.sum() == 0:
        return 0.0
    return float(np.nansum(members[col].to_numpy(dtype=float) * n) / n.sum())


def capability_mix(members: pd.DataFrame) -> dict[str, float]:
    mix = {c: _weighted(members, f"cap_{c}") for c in CAPABILITIES}
    total = sum(mix.values())
    if total <= 0:
        return {"chat_other": 1.0}
    return {c: round(v / total, 6) for c, v in mix.items() if v > 0}


def evidence(f: ClusterFacts, cfg: dict[str, Any]) -> list[Evidence]:
    """Every campaign signal of one cluster, strongest first."""
    c = cfg["campaigns"]
    m = f.members
    n = len(m)
    out: list[Evidence] = []
    extraction = _weighted(m, "extraction_share")
    out.append(Evidence(
        "extraction_prompts", extraction,
        f"{extraction:.0%} of the cluster's exchanges elicit chain-of-thought "
        f"({_weighted(m, 'cot_share'):.0%}), rubric grading ({_weighted(m, 'grading_share'):.0%})"
        f" or safe rewrites ({_weighted(m, 'safe_rewrite_share'):.0%})", 0.0))
    out.append(Evidence(
        "shared_template_families", f.family_share,
        f"{f.family_share:.0%} of member prompts fall in near-duplicate template families "
        f"used by several members",
        min(1.0, f.family_share / c["family_full"])))
    for dim, frac in sorted(f.anomalies.items(), key=lambda kv: -kv[1]):
        out.append(Evidence(
            f"unusual_{dim}", frac,
            f"{frac:.0%} of the cluster's traffic comes from members above the "
            f"{c['reference_quantile']:.0%} quantile ({f.thresholds[dim]:.3g}) of independent "
            f"accounts in {ANOMALY_DIMENSIONS[dim]}",
            _ramp(frac, anomaly_floor(dim, c), c["anomaly_full"]), f.thresholds[dim]))
    for dim, frac in sorted(f.filler_anomalies.items()):
        out.append(Evidence(
            f"fillers_{dim}", frac,
            f"{frac:.0%} of the traffic of the members filling the cluster's templates comes "
            f"from members above the reference in {ANOMALY_DIMENSIONS[dim]} (what content "
            f"coordination can support: a product's users share its templates, and only "
            f"some of them extract)",
            _ramp(frac, c["content_anomaly_floor"], c["content_anomaly_full"]),
            f.thresholds[dim]))
    mix = capability_mix(m)
    top = max(mix, key=mix.get)
    out.append(Evidence("capability_focus", mix[top],
                        f"{mix[top]:.0%} of exchanges are {top}", 0.0))
    s = f.synchrony
    out.append(Evidence(
        "synchrony", s.z,
        f"{s.observed:,.0f} co-active member pairs in {cfg['timing']['bucket_seconds']}s buckets "
        f"vs {s.expected:,.1f} expected for independent accounts (lift {s.lift:.1f}, z {s.z:.1f})",
        min(1.0, max(0.0, (s.lift - 1.0) / c["synchrony_full_lift"]))
        if s.z >= c["synchrony_min_z"] else 0.0))
    infra_pairs = sum(f.infra_kinds.values())
    out.append(Evidence(
        "shared_infrastructure", float(infra_pairs),
        "member links through " + (", ".join(f"{k} ({v})" for k, v in sorted(
            f.infra_kinds.items(), key=lambda kv: (-kv[1], kv[0]))) or "no shared infrastructure"),
        min(1.0, infra_pairs / max(1.0, n - 1))))
    if f.vocabulary_pairs:
        out.append(Evidence(
            "shared_vocabulary", float(f.vocabulary_pairs),
            f"{f.vocabulary_pairs} member pairs share more template families than independent "
            f"accounts would (Poisson test against their volumes)",
            min(1.0, f.vocabulary_pairs / max(1.0, n - 1))))
    out.append(Evidence("coordinated_accounts", float(n),
                        f"{n} accounts linked into one cluster", min(1.0, (n - 1) / 9)))
    vol = m["exchanges_per_active_day"].to_numpy(dtype=float)
    inside = float((vol <= f.benign_volume_p99).mean()) if len(vol) else 0.0
    out.append(Evidence(
        "volume_inside_benign_range", inside,
        f"{inside:.0%} of members stay at or below the 99th percentile of exchanges per "
        f"active day of all accounts ({f.benign_volume_p99:.1f}; member median "
        f"{float(np.median(vol)) if len(vol) else 0.0:.1f}): per-account volume limits do "
        f"not see them", inside))
    if f.pivot is not None:
        share, ref = f.pivot
        out.append(Evidence(
            "release_pivot", share,
            f"{share:.0%} of the cluster's traffic moved to the newly released model within "
            f"24 h, against {ref:.0%} for other accounts",
            min(1.0, max(0.0, share - ref) / c["pivot_full"])
            if share >= c["pivot_min_share"] else 0.0))
    return sorted(out, key=lambda e: -e.strength)


def score(ev: list[Evidence], cfg: dict[str, Any]) -> tuple[float, float, float]:
    """(score, behaviour, coordination).

    Coordination comes in two kinds. *Independent* evidence (shared infrastructure,
    synchrony) ties accounts to one operator. *Content* evidence (shared template
    families, a shared template vocabulary) also arises from homophily: the users of one
    product send its system prompt and phrasings and share its request shape (tools,
    thinking, images), and may move to a new model together when the product does. So
    content evidence supports only the `content_behaviours` (extraction prompts); the
    other behaviours and the release pivot need independent evidence, and
    `supporting_behaviours` (proxy rotation, also how roaming users look) never stand
    alone. A campaign needs both halves; the score is their geometric mean, scaled by
    how many accounts take part and the share of them inside the ordinary per-account
    volume range.

    With content coordination in a template-driven group, the behaviour is measured on
    the accounts that fill its templates (`fillers_*`, from `content_anomaly_floor`): a
    product's users all fill its templates, and only those who use its "step by step"
    command extract; an operator's accounts fill its templates to harvest.
    """
    c = cfg["campaigns"]
    by = {e.name: e.strength for e in ev}
    unusual = {k[len("unusual_"):]: v for k, v in by.items() if k.startswith("unusual_")}
    independent = 1 - ((1 - by.get("shared_infrastructure", 0) * 0.8)
                       * (1 - by.get("synchrony", 0)))
    content = 1 - ((1 - by.get("shared_template_families", 0) * 0.8)
                   * (1 - by.get("shared_vocabulary", 0) * 0.8))
    coord_all = 1 - (1 - independent) * (1 - content)
    supporting = set(c["supporting_behaviours"])
    any_behaviour = max([by.get("release_pivot", 0.0)] +
                        [v for k, v in unusual.items() if k not in supporting])
    content_behaviour = max([0.0] + [by.get(f"fillers_{k}", unusual.get(k, 0.0))
                                     for k in c["content_behaviours"]])
    pairs = [(any_behaviour, independent), (content_behaviour, coord_all)]
    behaviour, coord = max(pairs, key=lambda bc: bc[0] * bc[1])
    # A hydra spreads its load so that each head stays under per-account limits; a group
    # whose accounts each run far above ordinary volume is not hiding that way.
    coord *= by.get("coordinated_accounts", 0) ** 0.5 * by.get("volume_inside_benign_range", 0)
    return float(math.sqrt(behaviour * coord)), float(behaviour), float(coord)


def poisson_llr(observed: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Poisson log-likelihood ratio of an observed count against its expectation, 0 where
    the count is not above it (one-sided: only excess is evidence)."""
    e = np.maximum(expected, 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        llr = observed * np.log(np.where(observed > 0, observed / e, 1.0)) - observed + e
    return np.where(observed > e, llr, 0.0)


def campaign_id(account_ids: list[str]) -> str:
    """Stable id from the sorted member list: the same campaign gets the same id on re-runs."""
    digest = hashlib.sha256("\n".join(sorted(account_ids)).encode()).hexdigest()
    return f"cmp-{digest[:10]}"
