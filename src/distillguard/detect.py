"""`distillguard detect`: exchanges -> signals -> accounts -> linking -> campaigns -> outputs.

The heavy passes (per exchange, per account, key extraction) run in the engine; the
account graph, clustering and campaign scoring run on the driver over small tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd

from distillguard import campaigns as cmp
from distillguard import linking
from distillguard.engine.session import DuckDBSession
from distillguard.features import (
    OPTIONAL_DATA_COLUMNS,
    SignalPlan,
    account_features,
    exchange_features,
)
from distillguard.ingest import IngestReport
from distillguard.signals import text
from distillguard.signals.timing import release_pivot, synchrony

Progress = Callable[[str], None]


@dataclass
class Detection:
    """Everything a run produced, before it is written out."""

    accounts: pd.DataFrame  # contract accounts.parquet rows
    campaigns: list[dict[str, Any]]
    features: pd.DataFrame
    edges: pd.DataFrame
    timeline: pd.DataFrame
    templates: pd.DataFrame
    releases: pd.DataFrame
    plan: SignalPlan
    permitted: list[dict[str, Any]]
    organisations: list[dict[str, Any]]  # campaign-like use by one declared organisation


def present_columns(session: DuckDBSession, table: str, candidates: tuple[str, ...]) -> set[str]:
    """Columns that hold at least one non-empty value (absent or all-NULL ones are skipped)."""
    t = session.table(table)
    aggs = {c: (t[c].nullif("").count() if c in ("prompt", "system_prompt") else t[c].count())
            for c in candidates if c in t.columns}
    if not aggs:
        return set()
    row = session.pandas(t.aggregate(**aggs)).iloc[0]
    return {c for c in aggs if row[c]}


def _family_users(session: DuckDBSession) -> None:
    """Materialise `fam_users` (band, n_all): how many accounts use each template family,
    from the `fam` table. Every measurement of whether a family is characteristic of a
    group reads it, so it is counted once per run, not once per group measurement.

    `fam` has one row per (account, family), and a group holds an account once, so here
    and in the group measurements below a count of rows is a count of accounts: no
    distinct aggregate is needed."""
    fam = session.table("fam")
    session.materialize("fam_users", fam.group_by("band").aggregate(n_all=fam.count()))


def _characteristic(in_group: ir.IntegerValue, overall: ir.IntegerValue,
                    size: ir.IntegerValue, n_accounts: int, cfg: dict[str, Any]
                    ) -> ir.BooleanValue:
    """Whether a group's members use a template family at least `characteristic_lift`
    times more often than all accounts do: the group's own templates, not the public
    prompts and stock phrasings its members share with everyone."""
    lift = float(cfg["campaigns"]["characteristic_lift"])
    return in_group * n_accounts >= lift * overall * size


def _families_per_group(session: DuckDBSession) -> tuple[ir.Table, ir.Table]:
    """The `fam` rows of the registered `members` (account_id, cluster, csize), and per
    (cluster, band): its users among the members, the group's size and its users overall."""
    mem = session.table("members")
    j = session.table("fam").join(mem, "account_id")
    per = j.group_by(["cluster", "band"]).aggregate(users=j.count(), csize=j.csize.max())
    return j, per.join(session.table("fam_users"), "band")


def _register_members(session: DuckDBSession, groups: pd.DataFrame) -> pd.DataFrame:
    members = groups.assign(csize=groups.groupby("cluster")["account_id"].transform("size"))
    session.register("members", members[["account_id", "cluster", "csize"]])
    return members


def _characteristic_per_group(session: DuckDBSession, n_accounts: int, cfg: dict[str, Any]
                              ) -> ir.Table:
    """(cluster, band, users) for the registered `members`: the template families at least
    two members of a group use, and that are characteristic of it."""
    _, per = _families_per_group(session)
    return per.filter((per.users >= 2) & _characteristic(
        per.users, per.n_all, per.csize, n_accounts, cfg)).select("cluster", "band", "users")


def _characteristic_families(session: DuckDBSession, groups: pd.DataFrame,
                             n_accounts: int, cfg: dict[str, Any]) -> pd.DataFrame:
    """`_characteristic_per_group` of these groups, on the driver."""
    _register_members(session, groups)
    return session.pandas(_characteristic_per_group(session, n_accounts, cfg)
                          .order_by(["cluster", "band"]))


def _family_facts(session: DuckDBSession, n_accounts: int, cfg: dict[str, Any]
                  ) -> tuple[pd.Series, pd.Series]:
    """Per cluster and per member (of the registered `members` table): share of
    template-family slots on families that several members of the same cluster use and
    that are characteristic of it."""
    j, per = _families_per_group(session)
    need = ibis.greatest(2, (per.csize * cfg["campaigns"]["family_member_share"]).ceil())
    shared = per.filter((per.users >= need) & _characteristic(
        per.users, per.n_all, per.csize, n_accounts, cfg)).select("cluster", "band")
    jj = j.left_join(shared.mutate(is_shared=True), ["cluster", "band"])
    acc = jj.group_by(["cluster", "account_id"]).aggregate(
        on=(jj.cnt * jj.is_shared.fill_null(False).cast("int64")).sum(), all=jj.cnt.sum())
    df = session.pandas(acc)
    member = (df["on"] / df["all"].clip(lower=1)).set_axis(df["account_id"])
    by_cluster = df.groupby("cluster")[["on", "all"]].sum()
    cluster = (by_cluster["on"] / by_cluster["all"].clip(lower=1))
    return member, cluster


def _account_buckets(session: DuckDBSession) -> None:
    """Materialise `account_buckets` (account_id, bucket): the time buckets each account
    is active in, once per run. Synchrony counts active accounts per bucket for every
    group it measures and for all accounts; from these distinct pairs each count is a
    count of rows (at 37.8M exchanges, distinct accounts per bucket straight from the
    exchanges cost 32 s over the five measurements)."""
    xs = session.table("xs")
    session.materialize("account_buckets", xs.select("account_id", "bucket").distinct())


def _member_buckets(session: DuckDBSession) -> pd.DataFrame:
    """(cluster, bucket, k): members of each registered group active in each time bucket."""
    j = session.table("account_buckets").join(session.table("members"), "account_id")
    return session.pandas(j.group_by(["cluster", "bucket"]).aggregate(k=j.count()))


@dataclass(frozen=True)
class _Pivot:
    """A cluster's move to a newly released model in the 24 h after its release: its share,
    everyone else's share (the reference), and each member's exchanges in that window."""

    share: float
    ref: float
    member_new: pd.Series  # per member account: exchanges on the new model
    member_total: pd.Series  # per member account: all exchanges in the window


def _release_counts(session: DuckDBSession, releases: pd.DataFrame) -> pd.DataFrame:
    """(model, account_id, new, total): each account's exchanges in the 24 h after each
    release, and how many of them went to the released model with a prompt the account
    never sent to another model. One engine pass per release per run; every group
    measured later is counted from it.

    A team comparing models (a regression suite, a nightly evaluation) sends the new model
    the prompts it sends the old ones: that is a comparison, not traffic moving. Measured
    (docs/detection.md, "Comparisons are not a pivot"): 0.90-1.00 of such teams' traffic
    on a new model in its first day, 0.00-0.23 of 19 of 20 attackers' (a dialogue
    generator's stock follow-up turns: 0.52)."""
    xs = session.table("xs")
    frames = [pd.DataFrame({"model": pd.Series(dtype=str), "account_id": pd.Series(dtype=str),
                            "new": pd.Series(dtype="int64"), "total": pd.Series(dtype="int64")})]
    for model, at in releases[["model", "released_at"]].itertuples(index=False):
        start = pd.Timestamp(at)
        win = xs.filter((xs.ts >= start.to_pydatetime()) &
                        (xs.ts < (start + pd.Timedelta(hours=24)).to_pydatetime()))
        elsewhere = xs.filter((xs.model != model) & xs.prompt_hash.notnull()).join(
            win.select("account_id").distinct(), "account_id", how="semi").select(
            "account_id", "prompt_hash").distinct().mutate(_compared=ibis.literal(True))
        w = win.left_join(elsewhere, ["account_id", "prompt_hash"])
        moved = (w.model == model) & w._compared.isnull()
        frames.append(session.pandas(w.group_by("account_id").aggregate(
            new=moved.cast("int64").sum(), total=w.count())).assign(model=model))
    return pd.concat(frames, ignore_index=True)


def _pivots(counts: pd.DataFrame, members: pd.DataFrame) -> dict[int, _Pivot]:
    """Per cluster of `members`: the release it moved to most (against everyone else),
    with its members' own counts (a member can show the move itself)."""
    out: dict[int, _Pivot] = {}
    best: dict[int, float] = {}
    for _, c in counts.groupby("model", sort=False):  # in the order of the releases
        inside = c.merge(members[["account_id", "cluster"]], on="account_id")
        if inside.empty:
            continue
        rest = c[~c["account_id"].isin(members["account_id"])]
        o_new, o_tot = float(rest["new"].sum()), float(rest["total"].sum())
        for cl, grp in inside.groupby("cluster", sort=True):
            share, ref = release_pivot(float(grp["new"].sum()), float(grp["total"].sum()),
                                       o_new, o_tot)
            if share - ref > best.get(int(cl), -1.0):
                best[int(cl)] = share - ref
                g = grp.set_index("account_id")
                out[int(cl)] = _Pivot(share, ref, g["new"], g["total"])
    return out


def _member_pivot(pv: _Pivot, ids: list[str], c: dict[str, Any]) -> pd.Series:
    """Per member: whether it moved to the new model itself: its exchanges on it in the 24 h
    after release are more than everyone else's share makes likely (exact binomial tail
    below the one-sided level of `member_z`; a day holds few exchanges per account, too few
    for the Wilson bound: 1 of 1 is 5 % likely at a reference of 5 %)."""
    from scipy.stats import binom, norm

    new = pv.member_new.reindex(ids).fillna(0).to_numpy(dtype=float)
    total = pv.member_total.reindex(ids).fillna(0).to_numpy(dtype=float)
    tail = binom.sf(new - 1, total, min(max(pv.ref, 0.0), 1.0))
    return pd.Series((new > 0) & (tail < norm.sf(float(c["member_z"]))), index=ids)


def _account_context(session: DuckDBSession, account_cols: set[str]) -> pd.DataFrame:
    cols = [c for c in ("verification_path", "created_at", "allowlisted", "org_id")
            if c in account_cols]
    if not cols:
        return pd.DataFrame({"account_id": pd.Series(dtype=str)})
    a = session.table("accounts")
    return session.pandas(a.select("account_id", *cols))


@dataclass(frozen=True)
class Accepted:
    """A group a campaign pass accepted: its members, its score, and the behaviours that
    pass counted (None: all, the release pivot included)."""

    ids: list[str]
    score: float
    behaviours: tuple[str, ...] | None


@dataclass
class _FactContext:
    """What fact gathering needs besides the group membership."""

    feats: pd.DataFrame  # indexed by account_id
    edges: pd.DataFrame
    releases: pd.DataFrame
    present: set[str]
    weights: np.ndarray  # reference weight per account (rows of feats), see `_weights`
    quantile: float
    benign_p99: float
    leave_out: bool = False  # discount each cluster's own members in its reference ...
    leave_out_max_share: float = 0.0  # ... unless it holds more than this share of accounts

    def thresholds(self, ids: list[str]) -> dict[str, float]:
        """The reference thresholds a cluster with these members is measured against."""
        leave_out = self.leave_out and len(ids) <= self.leave_out_max_share * len(self.weights)
        key = (leave_out, tuple(ids) if leave_out else ())
        if key not in self._cache:
            w = self._as_one_actor(ids) if leave_out else self.weights
            self._cache[key] = cmp.reference_thresholds(self.feats, w, self.quantile)
        return self._cache[key]

    def _as_one_actor(self, ids: list[str]) -> np.ndarray:
        """The weights with these accounts together counting as at most one actor."""
        w = self.weights.copy()
        inside = self.feats.index.isin(ids)
        w[inside] = np.minimum(w[inside], 1.0 / max(len(ids), 1))
        return w

    def candidate_thresholds(self, ids: list[str], candidates: list[str]) -> dict[str, float]:
        """The reference a campaign's attach candidates are measured against: its members
        and the candidates together count as one actor. The candidates are suspected
        members (they fill its templates and are linked to it); counted as independent
        accounts, a campaign's unclustered accounts would set the bar they must clear."""
        return cmp.reference_thresholds(self.feats, self._as_one_actor([*ids, *candidates]),
                                        self.quantile)

    def release_counts(self, session: DuckDBSession) -> pd.DataFrame:
        """Per release and account, exchanges in the 24 h after it (`_release_counts`),
        once per run."""
        if self._releases is None:
            self._releases = _release_counts(session, self.releases)
        return self._releases

    def bucket_profile(self, session: DuckDBSession) -> pd.Series:
        """Accounts active per time bucket over all accounts, the synchrony null model's
        activity profile: one scan of the exchanges per run, not per measurement."""
        if self._profile is None:
            ab = session.table("account_buckets")
            prof = session.pandas(ab.group_by("bucket").aggregate(g=ab.count()))
            self._profile = prof.set_index("bucket")["g"].sort_index()
        return self._profile

    def __post_init__(self) -> None:
        self._cache: dict[tuple[bool, tuple[str, ...]], dict[str, float]] = {}
        self._profile: pd.Series | None = None
        self._releases: pd.DataFrame | None = None


def _gather_facts(session: DuckDBSession, groups: pd.DataFrame, ctx: _FactContext,
                  cfg: dict[str, Any]) -> dict[int, cmp.ClusterFacts]:
    """Measure every group (account_id, cluster) at once in the engine: template-family
    sharing, synchrony, release pivot; and on the driver: link kinds and behaviour."""
    if groups.empty:
        return {}
    members = _register_members(session, groups)
    if "prompt" in ctx.present:
        member_fam, cluster_fam = _family_facts(session, len(ctx.feats), cfg)
    else:
        member_fam, cluster_fam = pd.Series(dtype=float), pd.Series(dtype=float)
    mb, profile = _member_buckets(session), ctx.bucket_profile(session)
    pivots = _pivots(ctx.release_counts(session), members)
    of = members.set_index("account_id")["cluster"]
    inside = linking.within_clusters(ctx.edges, of)
    kind_pairs = pd.DataFrame({k: linking.has_kind(inside["kinds"], k)
                               for k in linking.EDGE_KINDS}).groupby(
        linking.label_of(of, inside["src"])).sum()
    mb_of = dict(tuple(mb.groupby("cluster", sort=False)))
    infra = inside[linking.has_kind(inside["kinds"], *linking.INFRA_KINDS)]
    infra_ids = linking.endpoints(infra)
    out: dict[int, cmp.ClusterFacts] = {}
    for cl, grp in members.groupby("cluster", sort=True):
        ids = sorted(grp["account_id"])
        m = ctx.feats.loc[ids].reset_index()
        thresholds = ctx.thresholds(ids)
        kinds = {k: int(v) for k, v in kind_pairs.loc[cl].items() if v} \
            if cl in kind_pairs.index else {}
        pv = pivots.get(int(cl))
        fam = member_fam.reindex(ids).fillna(0.0)
        anomalies = _anomalies(m, thresholds, cfg["campaigns"])
        out[int(cl)] = cmp.ClusterFacts(
            cluster=int(cl), members=m,
            family_share=float(cluster_fam.get(cl, 0.0)),
            member_family_share=fam,
            synchrony=synchrony(mb_of.get(cl, mb.iloc[:0]),
                                m.set_index("account_id")["active_buckets"], profile),
            infra_kinds={k: v for k, v in kinds.items() if k in linking.INFRA_KINDS},
            vocabulary_pairs=kinds.get("vocabulary", 0),
            pivot=(pv.share, pv.ref) if pv else None,
            member_pivot=_member_pivot(pv, ids, cfg["campaigns"]) if pv else None,
            benign_volume_p99=ctx.benign_p99,
            anomalies=anomalies, filler_anomalies=_filler_anomalies(
                m, fam.to_numpy(dtype=float), thresholds, anomalies, cfg["campaigns"]),
            thresholds=thresholds, infra_linked=frozenset(infra_ids.intersection(ids)))
    return out


def _filler_anomalies(m: pd.DataFrame, fam: np.ndarray, thresholds: dict[str, float],
                      anomalies: dict[str, float], c: dict[str, Any]) -> dict[str, float]:
    """In a template-driven cluster, the `content_behaviours`' anomalies among the members
    that fill its templates (at least `member_min_strength` of the median member's family
    share); empty otherwise. A product's users are a template population: its system
    prompt and commands are most of what they send. Ordinary accounts linked into the
    cluster in other ways neither dilute nor add to it."""
    ref = _template_reference(fam, c)
    if not ref:
        return {}
    fills = fam >= c["member_min_strength"] * ref
    found = _anomalies(m[fills].reset_index(drop=True), thresholds, c)
    return {d: found[d] for d in c["content_behaviours"] if d in found}


def run(session: DuckDBSession, ingest: IngestReport, cfg: dict[str, Any],
        progress: Progress = lambda _: None) -> Detection:
    """Run the whole detection over the validated views registered by the ingest."""
    plan = SignalPlan()
    present = present_columns(session, "exchanges", OPTIONAL_DATA_COLUMNS)
    account_cols = (set(ingest.tables["accounts"].columns_present)
                    if "accounts" in ingest.tables else set())
    if "accounts" in ingest.tables:
        account_cols &= present_columns(session, "accounts", tuple(account_cols)) | {"account_id"}
    progress("exchange signals")
    t = session.table("exchanges")
    xs_expr = exchange_features(t, present, cfg, plan)
    xs = session.materialize("xs", xs_expr)
    progress("account behaviour")
    feats = session.pandas(account_features(xs, present, plan, cfg))
    feats["exchanges_per_active_day"] = feats["n_exchanges"] / feats["active_days"].clip(lower=1)
    ctx = _account_context(session, account_cols)
    feats = feats.merge(ctx, on="account_id", how="left").sort_values("account_id",
                                                                      ignore_index=True)
    allowlisted = set(feats.loc[feats.get("allowlisted", pd.Series(False, index=feats.index))
                                .fillna(False).astype(bool), "account_id"])
    n_accounts = len(feats)

    progress("linking accounts")
    if "prompt" in present:
        fam_src = xs.select(account_id=xs.account_id, band=xs.bands.unnest())
        fam_src = fam_src.filter(fam_src.band.notnull())
        session.materialize("fam", fam_src.group_by(["account_id", "band"]).aggregate(
            cnt=fam_src.count()))
        _family_users(session)
    accounts_tbl = session.table("accounts") if "accounts" in ingest.tables else None
    families = session.table("fam") if "prompt" in present else None
    keys = linking.account_keys(xs, accounts_tbl, families, present, account_cols, cfg)
    acct = feats[["account_id", "n_exchanges"]].assign(
        allowlisted=feats["account_id"].isin(allowlisted), aid=np.arange(n_accounts))
    shared = session.materialize("shared", linking.in_order(linking.with_shares(
        linking.rare_keys(keys, n_accounts, cfg), session.register("acct_volume", acct),
        n_accounts, text.band_count(cfg))))
    chain = session.materialize("chain", linking.chain_order(
        shared, int(cfg["linking"]["chain_neighbours"])))
    edges = linking.collect_edges(session.pandas(linking.edges_expr(chain, cfg)),
                                  feats["account_id"])
    vocab = linking.collect_edges(session.pandas(linking.vocabulary_edges_expr(
        chain, cfg, float(feats["n_exchanges"].sum()), n_accounts)), feats["account_id"]) \
        if "prompt" in present else None
    membership = linking.cluster(edges, cfg)
    plan.computed.append("linking")

    progress("scoring campaigns")
    _account_buckets(session)
    c = cfg["campaigns"]
    acct_rows = pd.DataFrame({"account_id": feats["account_id"], "score": 0.0, "flagged": False,
                              "campaign_id": None, "reasons": [[] for _ in range(n_accounts)]})
    acct_rows = acct_rows.set_index("account_id")
    releases = (session.pandas(session.table("releases"))
                if "releases" in ingest.tables else pd.DataFrame(columns=["model", "released_at"]))
    ctx = _FactContext(
        feats=feats.set_index("account_id"), edges=edges, releases=releases, present=present,
        weights=_weights(feats, membership, allowlisted),
        quantile=float(c["reference_quantile"]),
        benign_p99=float(np.quantile(feats["exchanges_per_active_day"], 0.99))
        if n_accounts else 0.0)
    accepted = _campaign_pass(session, membership, ctx, cfg, acct_rows, allowlisted)
    if vocab is not None and not vocab.empty:
        # Pass 2: a broad template vocabulary spread thinly over many accounts links them
        # only weakly, pair by pair. With those links added, the graph is clustered again;
        # the new groups are campaigns only if their members also stand out in
        # extraction-like behaviour: homophily alone (many users of one coding tool share
        # phrasings and stand out in tool use) is not harvesting.
        ctx.edges = edges = linking.combine_edges(edges, vocab)
        wide = linking.cluster(edges, cfg, float(c["vocabulary_resolution"]))
        ctx.leave_out = True
        ctx.leave_out_max_share = float(c["leave_out_max_share"])
        taken = set(acct_rows.index[acct_rows["flagged"]])
        accepted += _campaign_pass(
            session, wide[~wide["account_id"].isin(taken)], ctx, cfg, acct_rows,
            allowlisted, behaviours=tuple(c["vocabulary_behaviours"]), link_kind="vocabulary")
    groups, floor = _final_groups(session, accepted, ctx, cfg)
    if "prompt" in present:
        groups = _attach(session, groups, ctx, cfg, acct_rows, allowlisted)
    campaigns_out = _final_campaigns(session, groups, floor, ctx, cfg, acct_rows)
    campaigns_out, organisations = _organisation_use(campaigns_out, ctx.feats, acct_rows, c)
    timeline = pd.DataFrame(columns=["campaign_id", "hour", "model", "n"])
    templates = pd.DataFrame(columns=["campaign_id", "template_id", "n_exchanges", "n_accounts",
                                      "example"])
    permitted = [{"account_id": a, "n_exchanges": int(feats.set_index("account_id")
                                                      .at[a, "n_exchanges"]),
                  "score": float(acct_rows.at[a, "score"])} for a in sorted(allowlisted)]
    acct_df = acct_rows.reset_index()
    return Detection(acct_df, campaigns_out, feats, edges, timeline, templates, releases, plan,
                     permitted, organisations)


def _weights(feats: pd.DataFrame, membership: pd.DataFrame, allowlisted: set[str]
             ) -> np.ndarray:
    """Reference weights of the null model: every independent actor counts once (an
    account weighs 1 / the size of its cluster, the allowlisted accounts together weigh
    one), so neither a campaign's thousands of accounts nor permitted distillers can make
    harvesting behaviour look ordinary."""
    size_of = membership.set_index("account_id")["cluster"].map(
        membership["cluster"].value_counts())
    size = feats["account_id"].map(size_of).fillna(1.0)
    size[feats["account_id"].isin(allowlisted)] = max(len(allowlisted), 1)
    return 1.0 / size.to_numpy(dtype=float)


def _campaign_pass(session: DuckDBSession, membership: pd.DataFrame, ctx: _FactContext,
                   cfg: dict[str, Any], acct_rows: pd.DataFrame, allowlisted: set[str],
                   behaviours: tuple[str, ...] | None = None, link_kind: str | None = None
                   ) -> list[Accepted]:
    """Clusters -> accepted groups; marks them flagged in `acct_rows`.

    Phase 1: the clusters' unusual behaviours pick each cluster's core, the members that
    carry them (a reseller's customers or a shared network's bystanders drop out). Phase
    2: a campaign is a group of core accounts linked to each other; its evidence is
    measured again on exactly those accounts. `behaviours` limits which unusual
    behaviours count (all, and the release pivot, when None); with `link_kind`, only
    members linked to their cluster by that kind of link can be core."""
    c = cfg["campaigns"]
    min_n = int(c["min_accounts"])
    clusters = membership[membership.groupby("cluster")["account_id"].transform("size") >= min_n]
    if behaviours is not None:
        # Without the release pivot, behaviour comes only from members above the reference:
        # clusters with too few of them cannot score, and are not measured in the engine.
        clusters = clusters[clusters["cluster"].isin(
            [cl for cl, g in clusters.groupby("cluster") if _can_stand_out(
                ctx, sorted(g["account_id"]),
                tuple(b for b in behaviours if b not in c["supporting_behaviours"]), c)])]
    eligible = _linked_by(clusters, ctx.edges, link_kind) if link_kind else None
    cores = []
    for facts, ev, sc in _scored(session, clusters, ctx, cfg, behaviours):
        strength = _member_strength(facts.members, facts, ev, c, confirm=link_kind is not None)
        ids = facts.members["account_id"].to_numpy()
        acct_rows.loc[ids, "score"] = np.maximum(acct_rows.loc[ids, "score"].to_numpy(),
                                                 np.round(sc * np.asarray(strength), 6))
        if sc >= c["score_threshold"]:
            cores += [(facts.cluster, a) for a, st in zip(facts.members["account_id"], strength,
                                                          strict=True)
                      if st >= c["member_min_strength"] and a not in allowlisted
                      and (eligible is None or a in eligible)]
    groups = linking.components(pd.DataFrame(cores, columns=["cluster", "account_id"]),
                                ctx.edges, min_n)
    accepted = []
    for facts, ev, sc in _scored(session, groups, ctx, cfg, behaviours):
        if sc >= c["score_threshold"]:
            ids = sorted(set(facts.members["account_id"]) - _bystanders(facts, ev, c))
            if len(ids) < min_n:
                continue
            acct_rows.loc[ids, "flagged"] = True
            accepted.append(Accepted(ids, sc, behaviours))
    return accepted


def _scored(session: DuckDBSession, groups: pd.DataFrame, ctx: _FactContext,
            cfg: dict[str, Any], behaviours: tuple[str, ...] | None
            ) -> list[tuple[cmp.ClusterFacts, list[cmp.Evidence], float]]:
    """Each group's facts, evidence and score; with `behaviours`, only those behaviours
    (and no release pivot) count, as in the vocabulary pass."""
    out = []
    for _, facts in _gather_facts(session, groups, ctx, cfg).items():
        ev = cmp.evidence(facts, cfg)
        if behaviours is not None:
            ev = [e for e in ev if e.name != "release_pivot" and cmp.behaviour_of(
                e.name) in (None, *behaviours)]
        out.append((facts, ev, cmp.score(ev, cfg)[0]))
    return out


def _can_stand_out(ctx: _FactContext, ids: list[str], behaviours: tuple[str, ...],
                   c: dict[str, Any]) -> bool:
    """Whether at least `min_accounts` of these members exceed the reference on one
    behaviour (the anomaly evidence is 0 otherwise)."""
    found = _anomalies(ctx.feats.loc[ids].reset_index(), ctx.thresholds(ids), c)
    return any(found.get(d, 0.0) > 0 for d in behaviours)


def _linked_by(membership: pd.DataFrame, edges: pd.DataFrame, kind: str) -> set[str]:
    """Accounts with a link of `kind` to another member of their own cluster."""
    e = linking.within_clusters(edges[linking.has_kind(edges["kinds"], kind)],
                                membership.set_index("account_id")["cluster"])
    return linking.endpoints(e)


def _attach(session: DuckDBSession, groups: pd.DataFrame, ctx: _FactContext,
            cfg: dict[str, Any], acct_rows: pd.DataFrame, allowlisted: set[str]
            ) -> pd.DataFrame:
    """Add to each campaign group (account_id, cluster) the unflagged accounts that fill
    its template families far beyond chance, are linked to it and share its unusual
    behaviour.

    Links are tested pair by pair, and a heavy account that spreads a campaign's broad
    template set over hundreds of prompts meets few of the other members often enough for
    any one pair to stand out (its high volume also raises what chance would give). Tested
    against the group as a whole, the evidence adds up: the account's distinct families
    that are characteristic of the group (used by at least two members, at least
    `characteristic_lift` times more often among them than among all accounts), against
    the share every other unflagged account has of them (Poisson log-likelihood ratio,
    Bonferroni over accounts x groups at `attach_alpha`). Content alone is not
    coordination (an evaluation harness runs the same public benchmarks a harvester
    does), so the account must also be linked to at least `attach_min_links` members,
    exceed the reference (`candidate_thresholds`: the group's members and candidates
    count as one actor) at `member_z` on one of its unusual behaviours, and stay
    inside the ordinary per-account volume range as hydra heads do (a harness running
    far above it is not hiding among the campaign's accounts). As for members, an account
    linked to the group by content alone qualifies only on `content_behaviours`; so does
    an unlinked one that rotates networks as the group does (exceeds the reference at
    `member_z` on a supporting behaviour the group is unusual in): a heavy account behind
    residential proxies shares no network with any other member and, being heavy, no
    single pair stands out in the vocabulary test either."""
    c = cfg["campaigns"]
    if groups.empty:
        return groups
    n_accounts = len(ctx.feats)
    n_groups = groups["cluster"].nunique()
    _register_members(session, groups)
    fam = session.table("fam")
    char = _characteristic_per_group(session, n_accounts, cfg).select("cluster", "band")
    cand = fam.anti_join(session.table("members"), "account_id")  # every flagged one is in a group
    n_per = session.pandas(cand.group_by("account_id").aggregate(n=cand.count()))
    hits = cand.select("account_id", "band").join(char, "band")
    h = session.pandas(hits.group_by(["account_id", "cluster"]).aggregate(h=hits.count()))
    h = h[~h["account_id"].isin(allowlisted)]
    if h.empty:
        return groups
    rate = h.groupby("cluster")["h"].sum() / max(float(n_per["n"].sum()), 1.0)
    h = h.merge(n_per, on="account_id")
    h["llr"] = cmp.poisson_llr(h["h"].to_numpy(float),
                               (h["n"] * h["cluster"].map(rate)).to_numpy(float))
    need = float(np.log(len(n_per) * n_groups / float(c["attach_alpha"])))
    h = h[h["llr"] >= need]
    links = _links_into(ctx.edges, groups, set(h["account_id"]))
    h = h.merge(links, on=["account_id", "cluster"], how="left").fillna(
        {"linked": 0, "infra": 0})
    h["linked"] = h["linked"] >= int(c["attach_min_links"])
    h = h.sort_values(["account_id", "linked", "llr"], ascending=[True, False, False]
                      ).drop_duplicates("account_id")
    added = []
    for cl, rows in h.groupby("cluster"):
        ids = sorted(groups.loc[groups["cluster"] == cl, "account_id"])
        thresholds = ctx.candidate_thresholds(ids, list(rows["account_id"]))
        unusual = [d for d, v in _anomalies(ctx.feats.loc[ids].reset_index(), thresholds,
                                            c).items() if v > cmp.anomaly_floor(d, c)]
        cands = ctx.feats.loc[rows["account_id"]].reset_index()  # in the order of rows
        linked = rows["linked"].to_numpy(dtype=bool)
        infra = linked & (rows["infra"].to_numpy() > 0)
        # Unlinked, an account can still hide behind the same kind of rotating proxies
        # as the group: that and its templates stand in for the links, for content
        # behaviours only.
        rotates = _rotates(cands, thresholds, set(unusual) & set(c["supporting_behaviours"]),
                           c)
        ok = np.zeros(len(cands), dtype=bool)
        inside = cands["exchanges_per_active_day"].to_numpy(float) <= ctx.benign_p99
        for d in set(unusual) - set(c["supporting_behaviours"]):
            hit = cmp.above(cands, thresholds, d, c["member_z"])
            ok |= hit & (linked | rotates) if d in c["content_behaviours"] else hit & infra
        added += [(a, cl) for a in cands.loc[ok & inside, "account_id"]]
    new = pd.DataFrame(added, columns=["account_id", "cluster"])
    acct_rows.loc[new["account_id"], "flagged"] = True
    return pd.concat([groups, new], ignore_index=True)


def _links_into(edges: pd.DataFrame, groups: pd.DataFrame, accounts: set[str]
                ) -> pd.DataFrame:
    """(account_id, cluster, linked, infra): how many members of each group these accounts
    have a link of any kind to, and a shared-infrastructure link to."""
    e = edges[edges["src"].isin(accounts) | edges["dst"].isin(accounts)]
    e = e.assign(infra=linking.has_kind(e["kinds"], *linking.INFRA_KINDS))
    both = pd.concat([e[["src", "dst", "infra"]].set_axis(["account_id", "other", "infra"],
                                                          axis=1),
                      e[["dst", "src", "infra"]].set_axis(["account_id", "other", "infra"],
                                                          axis=1)])
    both = both[both["account_id"].isin(accounts)]
    both["cluster"] = both["other"].map(groups.set_index("account_id")["cluster"])
    both = both.dropna(subset=["cluster"]).astype({"cluster": groups["cluster"].dtype})
    return both.groupby(["account_id", "cluster"]).agg(
        linked=("other", "size"), infra=("infra", "sum")).reset_index()


def _final_groups(session: DuckDBSession, accepted: list[Accepted], ctx: _FactContext,
                  cfg: dict[str, Any]) -> tuple[pd.DataFrame, pd.Series]:
    """The campaign groups (account_id, cluster) and each one's score floor. The accepted
    groups are first split where Leiden, run on the links among all flagged accounts,
    separates their members (a cluster can hold two operators that share a few
    templates, or an operator and a product's users). Then pieces linked to each other
    about as densely as inside themselves are merged (one operator found in pieces, by
    several clusters or by both passes, is one campaign), and so are pieces that use the
    same characteristic template families (one operator behind separate infrastructure
    per piece). The floor is the best score merged into a group: an accepted group's
    score goes with its main piece (most of its members); a piece split off brings only
    its own score, measured as its group was (`_split_off_scores`)."""
    if not accepted:
        return pd.DataFrame(columns=["account_id", "cluster"]), pd.Series(dtype=float)
    pieces = pd.DataFrame([(a, k) for k, g in enumerate(accepted) for a in g.ids],
                          columns=["account_id", "cluster"])
    e = ctx.edges
    among = e[e["src"].isin(pieces["account_id"]) & e["dst"].isin(pieces["account_id"])]
    comm = pieces["account_id"].map(linking.cluster(among, cfg).set_index("account_id")[
        "cluster"]).fillna(-1).astype("int64")
    split = pieces.assign(cluster=pd.factorize(pieces["cluster"] * (int(comm.max()) + 2)
                                               + comm + 1, sort=True)[0])
    floors = _split_off_scores(session, split, pieces["cluster"], accepted, ctx, cfg)
    groups = linking.merge_groups(split, e, float(cfg["campaigns"]["merge_min_ratio"]))
    if "prompt" in ctx.present:
        groups = linking.merge_by_families(
            groups, _characteristic_families(session, groups, len(ctx.feats), cfg),
            float(cfg["campaigns"]["family_merge_min_overlap"]))
    groups = linking.merge_by_instruments(
        groups, _instrument_uses(session, groups, cfg["campaigns"]["merge_instrument_kinds"]),
        float(cfg["campaigns"]["indicator_min_precision"]))
    floor = floors.groupby(groups["cluster"].to_numpy()).max()
    return groups, floor


def _split_off_scores(session: DuckDBSession, split: pd.DataFrame, parent: pd.Series,
                      accepted: list[Accepted], ctx: _FactContext, cfg: dict[str, Any]
                      ) -> pd.Series:
    """Per row of `split` (account_id, cluster: its piece; `parent`: the accepted group it
    came from), the score its piece brings: the accepted group's for the group's main
    piece (the one holding most of its members, the first of equals), the piece's own
    for a piece split off. What Leiden separates from an operator's accounts may be a
    product's users linked to them by a few shared keys; they are a campaign only on
    their own evidence (or merged back into the operator's)."""
    sizes = split.groupby([parent.to_numpy(), "cluster"]).size().rename("n").reset_index()
    sizes.columns = ["parent", "cluster", "n"]
    main = sizes.sort_values(["parent", "n", "cluster"], ascending=[True, False, True]
                             ).drop_duplicates("parent").set_index("parent")["cluster"]
    off = (split["cluster"] != parent.map(main)).to_numpy()
    floors = pd.Series([accepted[k].score for k in parent], index=split.index, dtype=float)
    # One measurement per pass (all pieces split off its groups at once), not per group.
    passes = [accepted[k].behaviours for k in parent]
    for b in dict.fromkeys(p for p, o in zip(passes, off, strict=True) if o):
        part = split[off & np.array([p == b for p in passes])]
        own = {f.cluster: sc for f, _, sc in _scored(session, part, ctx, cfg, b)}
        floors[part.index] = part["cluster"].map(own).fillna(0.0).to_numpy()
    return floors


def _instrument_uses(session: DuckDBSession, groups: pd.DataFrame, kinds: list[str]
                     ) -> pd.DataFrame:
    """(cluster, kind, key, members, users): the groups' account keys of these kinds, with
    how many of each group's members and how many accounts in all use each."""
    sh = session.table("shared")
    sh = sh.filter(sh.kind.isin(kinds))
    _register_members(session, groups)
    j = sh.join(session.table("members"), "account_id")
    return session.pandas(j.group_by([j.cluster, j.kind, j.key]).aggregate(
        members=j.count(), users=j.n.max()))


def _final_campaigns(session: DuckDBSession, groups: pd.DataFrame, floor: pd.Series,
                     ctx: _FactContext, cfg: dict[str, Any], acct_rows: pd.DataFrame
                     ) -> list[dict[str, Any]]:
    """The campaigns as reported: evidence measured again on each final group; its score
    is at least its floor. A group below the threshold (pieces split off an accepted
    group that are no campaign on their own) is dropped and its accounts unflagged."""
    out: list[dict[str, Any]] = []
    for cl, facts in _gather_facts(session, groups, ctx, cfg).items():
        ev = cmp.evidence(facts, cfg)
        sc = max(cmp.score(ev, cfg)[0], float(floor[cl]))
        keep = sorted(facts.members["account_id"])
        if sc < float(cfg["campaigns"]["score_threshold"]):
            acct_rows.loc[keep, "flagged"] = False
            acct_rows.loc[keep, "score"] = np.minimum(acct_rows.loc[keep, "score"], round(sc, 6))
            continue
        cid = cmp.campaign_id(keep)
        reasons = [f"{x.name}:{x.value:.3g}" for x in ev if x.strength > 0]
        # Whole columns at once: cell by cell, the campaigns' members cost seconds per
        # thousand accounts in pandas indexing.
        fam = facts.member_family_share.reindex(keep).fillna(0.0).to_numpy(dtype=float)
        ext = (ctx.feats["extraction_share"].reindex(keep).fillna(0.0).to_numpy(dtype=float)
               if "extraction_share" in ctx.feats.columns else np.zeros(len(keep)))
        acct_rows.loc[keep, "campaign_id"] = cid
        acct_rows.loc[keep, "score"] = [round(max(sc, v), 6)
                                        for v in acct_rows.loc[keep, "score"].tolist()]
        acct_rows.loc[keep, "reasons"] = pd.Series(
            [_account_reasons(f, e, reasons) for f, e in zip(fam.tolist(), ext.tolist(),
                                                             strict=True)],
            index=keep, dtype=object)
        out.append({"campaign_id": cid, "score": round(sc, 6), "account_ids": keep,
                    "_evidence": ev})
    return sorted(out, key=lambda x: x["campaign_id"])


def _organisation_use(campaigns: list[dict[str, Any]], feats: pd.DataFrame,
                      acct_rows: pd.DataFrame, c: dict[str, Any]
                      ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split off the campaigns whose members are seats of one declared organisation
    (at least `organisation_min_share` of them on one `org_id`, none on the reseller
    path): one customer in the open, not an operator hidden behind many accounts. Whether
    it may train on outputs is a question for its contract (the allowlist), so its
    accounts are not flagged; they keep their score, carry the reason
    `organisation_use:ORG`, and the group is reported with its evidence for review. A
    reseller's organisation holds its customers' accounts, so it stays a campaign."""
    if "org_id" not in feats.columns:
        return campaigns, []
    kept, orgs = [], []
    for cmp_ in campaigns:
        ids = cmp_["account_ids"]
        org = feats["org_id"].reindex(ids).astype("string").str.strip()
        top = org[org != ""].value_counts(dropna=True)  # a blank org_id declares nothing
        path = (feats["verification_path"].reindex(ids) if "verification_path" in feats
                else pd.Series(dtype=object))
        if (top.empty or top.iloc[0] < float(c["organisation_min_share"]) * len(ids)
                or (path == "reseller").any()):
            kept.append(cmp_)
            continue
        name = str(top.index[0])
        acct_rows.loc[ids, ["flagged", "campaign_id"]] = [False, None]
        acct_rows.loc[ids, "reasons"] = pd.Series(
            [[f"organisation_use:{name}", *r] for r in acct_rows.loc[ids, "reasons"]],
            index=ids, dtype=object)
        orgs.append({"org_id": name, "score": cmp_["score"], "account_ids": ids,
                     "signals": [e.as_dict() for e in cmp_["_evidence"] if e.strength > 0]})
    return kept, orgs


def _shows(m: pd.DataFrame, facts: cmp.ClusterFacts, ev: list[cmp.Evidence],
           c: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Per member: whether it shows one of the campaign's unusual behaviours, and whether
    it shows one of the `content_behaviours` among them. A member shows a behaviour when
    it exceeds the reference at `member_z` (alone, or for one of the `pooled_behaviours`
    pooled with the members that lean the same way: `cmp.above`), or, when it also
    exceeds it on a supporting behaviour (proxy rotation), at its point estimate: two
    indications together. Rotation alone shows nothing (a reseller's customers arrive
    through the same rotating networks as its distiller). Where the campaign moved to a
    new release and also stands out on another behaviour (a supporting one too: an
    agent harvester's tool use), a member that itself moved (`_member_pivot`) shows that:
    a move alone is also how a few colleagues behind one office address adopt a new model
    on its first day."""
    strong = {e.name[len("unusual_"):] for e in ev
              if e.strength > 0 and e.name.startswith("unusual_")} & set(facts.thresholds)
    supporting = strong & set(c["supporting_behaviours"])
    shows = np.zeros(len(m), dtype=bool)
    content = np.zeros(len(m), dtype=bool)
    rotates = _rotates(m, facts.thresholds, supporting, c)
    pooled = _pooled(c)
    for dim in strong - supporting:
        hit = cmp.above(m, facts.thresholds, dim, c["member_z"], pooled.get(dim)) \
            | (rotates & cmp.above(m, facts.thresholds, dim, 0.0))
        shows |= hit
        if dim in c["content_behaviours"]:
            content |= hit
    if facts.member_pivot is not None and strong and any(
            e.name == "release_pivot" and e.strength > 0 for e in ev):
        shows |= facts.member_pivot.reindex(m["account_id"]).fillna(False).to_numpy(dtype=bool)
    return shows, content


def _pooled(c: dict[str, Any]) -> dict[str, cmp.Pool]:
    """How each of the `pooled_behaviours` is pooled (the others are not; none with
    `pool_min_hits` 0)."""
    if int(c["pool_min_hits"]) <= 0:
        return {}
    pool = cmp.Pool(int(c["pool_min_hits"]), int(c["pool_max_exchanges"]))
    return dict.fromkeys(c["pooled_behaviours"], pool)


def _anomalies(m: pd.DataFrame, thresholds: dict[str, float], c: dict[str, Any]
               ) -> dict[str, float]:
    """The cluster's behaviour evidence (`cmp.anomaly`), members that rotate proxies
    counting at their point estimate on the other behaviours."""
    supporting = frozenset(c["supporting_behaviours"])
    measured = {d for d in supporting if d in thresholds and d in m}  # absent without IPs
    return cmp.anomaly(m, thresholds, int(c["min_accounts"]), _pooled(c),
                       rotating=_rotates(m, thresholds, measured, c), supporting=supporting)


def _rotates(m: pd.DataFrame, thresholds: dict[str, float], supporting: set[str],
             c: dict[str, Any]) -> np.ndarray:
    """Per account: whether it exceeds the reference at `member_z` on one of these
    supporting behaviours that are `rotation_behaviours` (proxy rotation; not tool use,
    which an IDE agent's users share with its harvesters)."""
    out = np.zeros(len(m), dtype=bool)
    for dim in sorted(set(supporting) & set(c["rotation_behaviours"])):
        out |= cmp.above(m, thresholds, dim, c["member_z"])
    return out


def _family_reference(facts: cmp.ClusterFacts, c: dict[str, Any]) -> float:
    """`_template_reference` of a measured cluster's members."""
    return _template_reference(facts.member_family_share.to_numpy(dtype=float), c)


def _template_reference(fam: np.ndarray, c: dict[str, Any]) -> float:
    """The members' median share of the cluster's template families; above
    `family_floor` the cluster is template-driven (0 otherwise)."""
    ref = float(np.median(fam)) if len(fam) else 0.0
    return ref if ref > c["family_floor"] else 0.0


def _member_strength(m: pd.DataFrame, facts: cmp.ClusterFacts, ev: list[cmp.Evidence],
                     c: dict[str, Any], confirm: bool = False) -> list[float]:
    """How much of what made the campaign stand out each member itself carries, in [0, 1].

    A reseller pool or a shared network can pull ordinary accounts into a cluster; they
    do not share its unusual behaviour (`_shows`) or fill its templates, so they score
    low. With `confirm` (clusters held together by weak links only), filling the
    cluster's templates is not enough either: the families a thin cluster shares include
    the ordinary phrasings its bystanders use.
    """
    shows, _ = _shows(m, facts, ev, c)
    ref_fam = _family_reference(facts, c)
    if not ref_fam:
        return [float(v) for v in shows]
    # A template-driven cluster: members are the accounts that fill its templates. Unless
    # its behaviour is one that content coordination supports (`cmp.score`), filling them
    # is no tie on its own: an agent's ordinary users fill its system prompt and tool
    # schema as a harvester running the agent does. Such a member counts when linked by
    # infrastructure or when it shows the behaviour itself.
    s = np.nan_to_num(np.minimum(1.0, facts.member_family_share.to_numpy(dtype=float)
                                 / ref_fam))
    if not any(e.strength > 0 and e.name == f"unusual_{d}"
               for e in ev for d in c["content_behaviours"]):
        s = s * (m["account_id"].isin(facts.infra_linked).to_numpy() | shows)
    return [float(v) for v in (s * shows if confirm else s)]


def _bystanders(facts: cmp.ClusterFacts, ev: list[cmp.Evidence], c: dict[str, Any]
                ) -> set[str]:
    """Members of an accepted group that do not carry its evidence: they are not flagged.
    In a template-driven group the members are the accounts that fill its templates (at
    least `member_min_strength` of the members' median family share), however they are
    tied to it: the same rule as for a template-driven cluster's core, made again on the
    group, because a cluster diluted by ordinary accounts is not template-driven while
    the core group drawn from it can be, and its core was then picked by behaviour (a
    solo developer's thinking habit, a reseller customer's rotating networks). In other
    groups, a member tied to the others by content alone (no shared infrastructure) must
    show one of the `content_behaviours`: content coordination supports only those for a
    campaign as a whole, and so for a member (the users of one kind of tool share its
    phrasings and its tool and thinking habits). The group is measured and accepted with
    them, so the rule only takes accounts out of campaigns, never makes one."""
    m = facts.members
    if _family_reference(facts, c):
        fills = np.asarray(_member_strength(m, facts, ev, c)) >= c["member_min_strength"]
        return set(m.loc[~fills, "account_id"])
    _, content = _shows(m, facts, ev, c)
    tied = m["account_id"].isin(facts.infra_linked).to_numpy()
    return set(m.loc[~tied & ~content, "account_id"])


def _account_reasons(fam: float, ext: float, campaign_reasons: list[str]) -> list[str]:
    """One member's reasons: its own share of the campaign's template families and of
    extraction-style prompts (larger first), then the campaign's."""
    own = []
    if fam > 0:
        own.append((fam, f"shared_template_families:{fam:.2f}"))
    if ext > 0:
        own.append((ext, f"extraction_prompts:{ext:.2f}"))
    own.sort(key=lambda kv: -kv[0])
    return [r for _, r in own] + [f"campaign:{r}" for r in campaign_reasons]
