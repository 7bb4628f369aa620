"""Link accounts into hydra clusters: shared keys -> weighted account graph -> Leiden.

A *key* is anything two accounts of one operator tend to share: an IP, a /24 or /48, an
ASN on the same day, a payment instrument, a non-public e-mail domain, a sign-up burst,
a prompt template or a near-duplicate template family. Keys common among ordinary
accounts (carrier NAT, campus networks, large clouds, stock phrasings) are down-weighted
by how many accounts share them (an IDF weight) and dropped past a fan-out cap, so the
graph is built from rare coincidences, not popular infrastructure.

Key extraction runs in the engine; the graph (accounts and their rare shared keys) is
small and is built and clustered on the driver with igraph's Leiden.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import ibis
import ibis.expr.types as ir
import igraph as ig
import numpy as np
import pandas as pd
import pyarrow as pa

from distillguard.engine.portable import stable_hash

_RNG_LOCK = threading.Lock()  # igraph's generator is global: one seeded clustering at a time

INFRA_KINDS = ("ip", "ip_prefix", "asn_day", "payment", "email_domain", "signup_ip",
               "signup_burst", "org")
# Keys from the prompt text: an operator's template can be filled by thousands of its
# accounts, so these get a larger fan-out cap (their IDF still weighs them down).
CONTENT_KINDS = ("template", "family", "system_template")
# Keys that are attributes of the account (one value each), not of its traffic.
ACCOUNT_KINDS = ("payment", "email_domain", "signup_ip", "signup_burst", "org")
# Every kind an edge can carry. An edge's kinds are a bit mask over this tuple (an
# integer per edge: millions of edges at provider scale, where a list of names per edge
# cost the driver hundreds of megabytes); `kind_bit` and `kind_lists` convert.
EDGE_KINDS = INFRA_KINDS + CONTENT_KINDS + ("vocabulary",)
# Edge weights are rounded to this many decimals: the engine sums floating-point
# contributions in whatever order its threads meet them, and the last bit of a sum must
# not differ between two runs over the same input.
WEIGHT_DECIMALS = 9


def kind_bit(kind: str) -> int:
    """The bit of one edge kind in an edge's `kinds` mask."""
    return 1 << EDGE_KINDS.index(kind)


def has_kind(masks: pd.Series, *kinds: str) -> np.ndarray:
    """Which edges (their `kinds` masks) carry any of these kinds."""
    return (masks.to_numpy(dtype="int64") & sum(kind_bit(k) for k in kinds)) > 0


def kind_lists(masks: pd.Series) -> pa.Array:
    """The kinds of each edge as a sorted list of names (for the run directory), built
    once per distinct mask."""
    uniq, inverse = np.unique(masks.to_numpy(dtype="int64"), return_inverse=True)
    names = [sorted(k for k in EDGE_KINDS if m & kind_bit(k)) for m in uniq.tolist()]
    return pa.array(names, type=pa.list_(pa.string())).take(pa.array(inverse))


def _keys(x: ir.Table, kind: str, key: ir.Value, *more: ir.Value,
          render: Callable[..., ir.StringValue] | None = None) -> ir.Table:
    """(account_id, kind, key, cnt): how many of the account's rows carry the key.

    Grouped on the key's own columns (integers stay integers) and rendered as text only
    after that, once per (account, key) instead of once per exchange; `render` builds the
    text from several columns (default: the one column as a string)."""
    cols = {f"k{i}": v for i, v in enumerate((key, *more))}
    k = x.select(account_id=x.account_id, **cols)
    k = k.filter(ibis.and_(*[k[c].notnull() for c in cols]))
    k = k.group_by(["account_id", *cols]).aggregate(cnt=k.count())
    text = render(*(k[c] for c in cols)) if render else k.k0.cast("string")
    return k.select("account_id", kind=ibis.literal(kind), key=text, cnt=k.cnt)


def account_keys(x: ir.Table, accounts: ir.Table | None, families: ir.Table | None,
                 present: set[str], account_cols: set[str], cfg: dict[str, Any]) -> ir.Table:
    """(account_id, kind, key, cnt) rows for every linking key the input supports, one
    per account and key.

    `families` is the per-account template-family count table (account_id, band, cnt)
    the pipeline materialises once and also uses for campaign evidence."""
    parts: list[ir.Table] = []
    if "ip" in present:
        parts += [_keys(x, "ip", x.ip), _keys(x, "ip_prefix", x.ip_prefix)]
    if "asn" in present:
        parts.append(_keys(x, "asn_day", x.asn, x.day,
                           render=lambda asn, day: asn.cast("string") + "@" + day.cast("string")))
    if "prompt" in present:
        parts.append(_keys(x, "template", x.template_id))
    if families is not None:
        parts.append(families.select(account_id=families.account_id,
                                     kind=ibis.literal("family"),
                                     key=families.band.cast("string"), cnt=families.cnt))
    if "system_prompt" in present:
        parts.append(_keys(x, "system_template", x.system_template_id))
    if accounts is not None:
        a = accounts
        if "payment_fingerprint" in account_cols:
            parts.append(_keys(a, "payment", a.payment_fingerprint))
        if "email_domain" in account_cols:
            parts.append(_keys(a, "email_domain", a.email_domain.lower()))
        if "signup_ip" in account_cols:
            parts.append(_keys(a, "signup_ip", a.signup_ip))
        if "org_id" in account_cols:
            parts.append(_keys(a, "org", a.org_id))
        if "created_at" in account_cols:
            burst = int(cfg["linking"]["signup_burst_seconds"])
            window = (a.created_at.epoch_seconds().cast("int64") // burst).cast("string")
            asn = a.signup_asn.cast("string").fill_null("") if "signup_asn" in account_cols \
                else ibis.literal("")
            parts.append(_keys(a, "signup_burst", window + "@" + asn))
    if not parts:
        return ibis.memtable(pd.DataFrame({"account_id": pd.Series(dtype=str),
                                           "kind": pd.Series(dtype=str),
                                           "key": pd.Series(dtype=str),
                                           "cnt": pd.Series(dtype="int64")}))
    keys = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    return keys


def fanout_cap(cfg: dict[str, Any], n_accounts: int) -> int:
    """Most accounts an ordinary key may be shared by and still link anyone."""
    lk = cfg["linking"]
    return max(int(lk["max_key_fanout"]), int(lk["max_key_fanout_share"] * n_accounts))


def rare_keys(keys: ir.Table, n_accounts: int, cfg: dict[str, Any]) -> ir.Table:
    """Keys shared by at least two accounts and at most the fan-out cap, with their size
    and an integer id (hashed once per key, not once per account and key)."""
    lk = cfg["linking"]
    cap = fanout_cap(cfg, n_accounts)
    content_cap = max(cap, int(lk["max_content_key_fanout_share"] * n_accounts))
    # `keys` has one row per (account, kind, key): a count is the number of accounts.
    sizes = keys.group_by(["kind", "key"]).aggregate(n=keys.count(), uses=keys.cnt.sum())
    limit = ibis.cases((sizes.kind.isin(CONTENT_KINDS), content_cap), else_=cap)
    sizes = sizes.filter((sizes.n >= 2) & (sizes.n <= limit))
    sizes = sizes.mutate(key_id=stable_hash(sizes.kind + "|" + sizes.key))
    return keys.join(sizes, ["kind", "key"]).select("account_id", "kind", "key", "key_id",
                                                    "cnt", "n", "uses")


def with_shares(rare: ir.Table, accounts: ir.Table, n_accounts: int, family_slots: int
                ) -> ir.Table:
    """Rare keys of accounts that sent traffic and are not allowlisted, with
    `share` (the fraction of the account's traffic, or template-family slots, carrying the
    key; 1 for account attributes), `idf` = log(N / n) / log(N), the account's
    exchanges (`volume`) and the key's uses by all accounts (`uses`) for the vocabulary
    null model, and the account's integer id `aid` (from `accounts`)."""
    j = rare.join(accounts.filter(~accounts.allowlisted), "account_id")
    n_ex = j.n_exchanges.cast("float64")
    share = ibis.cases(
        (j.kind.isin(ACCOUNT_KINDS), ibis.literal(1.0)),
        (j.kind == "family", j.cnt.cast("float64") / (n_ex * family_slots)),
        else_=j.cnt.cast("float64") / n_ex)
    log_n = float(np.log(max(n_accounts, 3)))
    idf = (ibis.literal(float(n_accounts)) / j.n.cast("float64")).ln() / log_n
    return j.select("account_id", "aid", "kind", "key", "key_id", "n", "uses", share=share,
                    idf=idf, volume=j.n_exchanges)


def in_order(shared: ir.Table) -> ir.Table:
    """`with_shares` rows with the kind's bit and a seeded random `order` of each key's
    accounts, and without the text of content keys (template ids, family phrasings: most
    of the rows and most of their bytes; only infrastructure keys are shown later, as
    campaign indicators). Materialise it: the indicators read it, `chain_order` sorts it.

    Account ids, key sizes and account volumes are 32-bit: tens of millions of these rows
    are sorted, copied into the chain and aggregated in pairs, and narrower rows spill
    less (at 7.56M exchanges the chain and both edge queries took 8-12 % less time, with
    identical edges)."""
    bit = ibis.cases(*[(shared.kind == k, ibis.literal(kind_bit(k), "int64"))
                       for k in EDGE_KINDS], else_=ibis.literal(0, "int64"))
    return shared.mutate(order=stable_hash(shared.account_id + "|" + shared.key), kbit=bit,
                         key=ibis.cases((shared.kind.isin(CONTENT_KINDS), ibis.null("string")),
                                        else_=shared.key),
                         aid=shared.aid.cast("int32"), n=shared.n.cast("int32"),
                         volume=shared.volume.cast("int32"))


def chain_order(ordered: ir.Table, neighbours: int) -> ir.Table:
    """For every rare-key row (`in_order` rows), the integer id (`nb1`...) and share
    (`nbs1`...) of the `neighbours` accounts after it in its key's order: the chain pairs
    of every kind from one sort, with no self-joins (some 40M pair rows at 7.56M
    exchanges). Only the numbers the edges need are kept: at that size, sorting the
    rows with their account and key text took twice as long. Materialise it once."""
    s = ordered.select("aid", "key_id", "kbit", "n", "uses", "share", "idf", "volume",
                       "order")
    w = ibis.window(group_by=[s.key_id], order_by=[s.order, s.aid])
    ahead = {}
    for d in range(1, neighbours + 1):
        ahead[f"nb{d}"] = s.aid.lead(d).over(w)
        ahead[f"nbs{d}"] = s.share.lead(d).over(w)
    return s.mutate(**ahead).drop("order", "key_id")


def _chain_pairs(s: ir.Table, c: int) -> ir.Table:
    """Account pairs (integer ids) met through shared keys: each key links its accounts in
    a short chain over the seeded order of `chain_order` (all pairs when the key is
    small), `c` neighbours each way, so a key shared by n accounts costs O(n) rows, never
    O(n^2). `inv_reach` is 1 / the probability that a given pair of the key's accounts is
    sampled (Horvitz-Thompson), `raw` the pair's overlap on the key."""
    n = s.n.cast("float64")
    reach = ibis.cases((s.n > c + 1, (2 * c * n - c * (c + 1)) / (n * (n - 1))),
                       else_=ibis.literal(1.0))
    parts = []
    for d in range(1, c + 1):
        nb, nbs = s[f"nb{d}"], s[f"nbs{d}"]
        parts.append(s.filter(nb.notnull()).select(
            src=ibis.least(s.aid, nb), dst=ibis.greatest(s.aid, nb), kbit=s.kbit,
            raw=s.idf * ibis.least(s.share, nbs), inv_reach=1.0 / reach))
    return parts[0].union(*parts[1:], distinct=False) if len(parts) > 1 else parts[0]


def _vocabulary(pairs: ir.Table, fam: ir.Table, total_exchanges: float,
                lk: dict[str, Any]) -> ir.Table:
    """(src, dst, kind, w) for pairs that share more template families than independent
    accounts would (`fam`: the family rows of `chain_order`).

    An operator that spreads a broad template set thinly over many low-volume accounts
    gives each pair only a few shared families, too few for the overlap weight; but the
    pair still shares them far more often than chance. Under independence, account b
    uses family k with probability about volume_b * uses_k / total, so a's expected
    shared count with b is E = volume_b * mass_a / total (symmetrised), mass_a being the
    uses of a's rare families. The observed count (Horvitz-Thompson from the chain
    sample) is compared with E by the Poisson log-likelihood ratio; pairs below
    `vocabulary_min_lift` * E get nothing. Single pairs stay weak evidence; a dense group
    of them is what clustering picks up and campaign scoring then tests."""
    acct = fam.group_by("aid").aggregate(mass=fam.uses.sum().cast("float64"),
                                         vol=fam.volume.max().cast("float64"))
    fp = pairs.group_by(["src", "dst"]).aggregate(ht=pairs.inv_reach.sum(), hits=pairs.count())
    fp = fp.select("src", "dst", obs=ibis.cases((fp.hits >= 2, fp.ht), else_=1.0))
    a, b = acct.view(), acct.view()
    j = fp.join(a, fp.src == a.aid).join(b, fp.dst == b.aid)
    expected = (j.vol_right * j.mass + j.vol * j.mass_right) / (2.0 * total_exchanges)
    j = j.select("src", "dst", "obs", expected=ibis.greatest(expected, 1e-9))
    llr = j.obs * (j.obs / j.expected).ln() - j.obs + j.expected
    w = float(lk["kind_weights"]["vocabulary"]) * (
        1 - (-llr / float(lk["vocabulary_llr_scale"])).exp())
    j = j.filter((j.obs >= float(lk["vocabulary_min_lift"]) * j.expected)
                 & (j.obs >= float(lk["vocabulary_min_shared"])))
    return j.select("src", "dst", kbit=ibis.literal(kind_bit("vocabulary"), "int64"), w=w)


def _edge_table(per: ir.Table, lk: dict[str, Any]) -> ir.Table:
    """(src, dst, weight, kinds) from per-kind pair weights (src, dst, kbit, w) of integer
    account ids, one row per pair and kind; `kinds` is the bit mask of the pair's kinds
    (`kind_bit`): distinct bits, so their sum (Spark's Ibis compiler has no bit_or). The
    weight is rounded (`WEIGHT_DECIMALS`) so that it does not depend on summation order."""
    per = per.filter(per.w >= float(lk["min_kind_weight"]))
    edges = per.group_by(["src", "dst"]).aggregate(weight=per.w.sum().round(WEIGHT_DECIMALS),
                                                   kinds=per.kbit.sum())
    return edges.filter(edges.weight >= float(lk["min_edge_weight"]))


def edges_expr(chain: ir.Table, cfg: dict[str, Any]) -> ir.Table:
    """Weighted account pairs from shared rare keys (`chain_order` rows), computed in the
    engine.

    Two accounts are similar on a kind of key when the same rare keys dominate both:
    sim = sum over shared keys of idf * min(share_a, share_b), a weighted overlap in
    [0, 1]. Ordinary users who happen to share one popular phrasing or network get
    little; accounts driven by one operator's templates and proxies get a lot. The kind
    adds w_kind * (1 - exp(-3 sim)). When a pair and kind were sampled through two or more
    keys, the sampled contributions are divided by their sampling probability
    (Horvitz-Thompson), so a pair sharing many big keys is not under-counted; a pair met
    through a single popular key is not scaled.
    """
    lk = cfg["linking"]
    weights = {k: float(v) for k, v in lk["kind_weights"].items() if k != "vocabulary"}
    pairs = _chain_pairs(chain.filter(chain.kbit.isin([kind_bit(k) for k in weights])),
                         int(lk["chain_neighbours"]))
    per = pairs.group_by(["src", "dst", "kbit"]).aggregate(
        raw=pairs.raw.sum(), ht=(pairs.raw * pairs.inv_reach).sum(), hits=pairs.count())
    sim = ibis.cases((per.hits >= 2, per.ht), else_=per.raw)
    w_kind = ibis.cases(*[(per.kbit == kind_bit(k), ibis.literal(v)) for k, v in weights.items()],
                        else_=ibis.literal(0.0))
    return _edge_table(per.select(
        "src", "dst", "kbit", w=w_kind * (1 - (-3.0 * ibis.least(sim, 1.0)).exp())), lk)


def vocabulary_edges_expr(chain: ir.Table, cfg: dict[str, Any], total_exchanges: float,
                          n_accounts: int) -> ir.Table:
    """Account pairs that share template families beyond independent use (see
    `_vocabulary`), as an edge table; `chain` holds `chain_order` rows, `total_exchanges`
    is all accounts' exchanges.

    Only families within the ordinary fan-out cap count: on very popular families, users
    of the same kind of tool share phrasings (homophily), and the Poisson test, strong on
    large counts, would read that as coordination. An operator's own templates, however
    popular, still link its accounts through the overlap weight."""
    lk = cfg["linking"]
    fam = chain.filter((chain.kbit == kind_bit("family"))
                       & (chain.n <= fanout_cap(cfg, n_accounts)))
    pairs = _chain_pairs(fam, int(lk["chain_neighbours"]))
    return _edge_table(_vocabulary(pairs, fam, total_exchanges, lk), lk)


def collect_edges(df: pd.DataFrame, names: pd.Series) -> pd.DataFrame:
    """Edges fetched from the engine, with the integer account ids replaced by the names
    they index (`names`: account_id by aid, in sorted order), ordered by (src, dst)."""
    src, dst = df["src"].to_numpy(dtype="int64"), df["dst"].to_numpy(dtype="int64")
    order = np.lexsort((dst, src))  # ids follow the names' order
    ids = names.to_numpy()
    return pd.DataFrame({"src": pd.Series(ids[src[order]], dtype=str),
                         "dst": pd.Series(ids[dst[order]], dtype=str),
                         "weight": df["weight"].to_numpy(dtype=float)[order],
                         "kinds": df["kinds"].to_numpy(dtype="int64")[order]})


def combine_edges(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Two edge tables as one: weights of a pair in both are added, kinds merged."""
    m = a.merge(b, on=["src", "dst"], how="outer", suffixes=("_a", "_b"), sort=True)
    weight = m["weight_a"].fillna(0.0) + m["weight_b"].fillna(0.0)
    kinds = m["kinds_a"].fillna(0).astype("int64") | m["kinds_b"].fillna(0).astype("int64")
    return pd.DataFrame({"src": m["src"], "dst": m["dst"], "weight": weight, "kinds": kinds})


def cluster(edges: pd.DataFrame, cfg: dict[str, Any], resolution: float | None = None
            ) -> pd.DataFrame:
    """Leiden communities of the account graph (seeded: same input, same clusters), at
    `resolution` (default: `[linking] leiden_resolution`)."""
    if edges.empty:
        return pd.DataFrame({"account_id": pd.Series(dtype=str),
                             "cluster": pd.Series(dtype="int64")})
    # One sorted factorisation of both ends (a dict lookup per edge end cost seconds per
    # million edges); vertex i is the i-th account name in sorted order.
    codes, names = pd.factorize(pd.concat([edges["src"], edges["dst"]], ignore_index=True),
                                sort=True)
    n = len(edges)
    g = ig.Graph(n=len(names), edges=list(zip(codes[:n].tolist(), codes[n:].tolist(),
                                              strict=True)))
    g.es["weight"] = edges["weight"].astype(float).tolist()
    # igraph's Leiden (modularity with resolution: the RB configuration model) draws from
    # igraph's one process-wide generator; a generator of our own seed, swapped in under a
    # lock, makes the partition a function of the input. (It replaced leidenalg: 7x faster
    # on the 7.56M-exchange graph, partition ARI 0.998 to leidenalg's, docs/scale.md.)
    with _RNG_LOCK:
        ig.set_random_number_generator(random.Random(int(cfg["linking"]["seed"])))
        try:
            part = g.community_leiden(
                objective_function="modularity", weights="weight",
                resolution=float(cfg["linking"]["leiden_resolution"] if resolution is None
                                 else resolution),
                n_iterations=int(cfg["linking"]["leiden_iterations"]))
        finally:
            ig.set_random_number_generator(random)
    return pd.DataFrame({"account_id": np.asarray(names),
                         "cluster": _by_size(np.asarray(part.membership, dtype="int64"))})


def _by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster labels renumbered largest first (ties: the first vertex's order), so the
    labels and every order that follows them do not depend on the clustering library."""
    _, first, inverse, size = np.unique(labels, return_index=True, return_inverse=True,
                                        return_counts=True)
    rank = np.empty(len(size), dtype="int64")
    rank[np.lexsort((first, -size))] = np.arange(len(size))
    return rank[inverse]


def within_clusters(edges: pd.DataFrame, of: pd.Series) -> pd.DataFrame:
    """The edges whose two accounts are in the same cluster (`of`: account -> cluster)."""
    s, d = of.index.get_indexer(edges["src"]), of.index.get_indexer(edges["dst"])
    keep = (s >= 0) & (d >= 0)
    label = of.to_numpy()
    keep[keep] = label[s[keep]] == label[d[keep]]
    return edges[keep]


def label_of(of: pd.Series, names: pd.Series) -> np.ndarray:
    """The values of `of` (indexed by account) for these account names, all of which it
    holds. (An index lookup: `Series.map` over Arrow-backed names cost seconds.)"""
    return of.to_numpy()[of.index.get_indexer(names)]


def endpoints(edges: pd.DataFrame) -> set[str]:
    """The accounts at either end of these edges. (Unique names first: iterating
    hundreds of thousands of Arrow-backed strings into a set cost about a second per
    call at 7.56M exchanges.)"""
    both = np.concatenate([edges["src"].to_numpy(dtype=object),
                           edges["dst"].to_numpy(dtype=object)])
    return set(pd.unique(both).tolist())


def _agglomerate(n_groups: int, similarity: Callable[[], np.ndarray],
                 absorb: Callable[[int, int], None], min_value: float) -> np.ndarray:
    """Best-first agglomeration: while the most similar pair of live groups is at least
    `min_value` similar, `absorb` the second into the first. `similarity()` gives the
    (n_groups x n_groups) matrix of the current groups (rows of absorbed groups are
    ignored). Returns each group's final group."""
    alive = np.ones(n_groups, dtype=bool)
    target = np.arange(n_groups)
    while alive.sum() > 1:
        sim = similarity().copy()
        sim[~alive, :] = sim[:, ~alive] = -1.0
        np.fill_diagonal(sim, -1.0)
        i, j = np.unravel_index(int(np.argmax(sim)), sim.shape)
        if sim[i, j] < min_value:
            break
        absorb(int(i), int(j))
        alive[j] = False
        target[target == j] = i
    return target


def _positions(groups: pd.DataFrame) -> tuple[np.ndarray, pd.Series]:
    """The groups' labels in order, and each account's position among them."""
    labels = np.sort(groups["cluster"].unique())
    return labels, pd.Series(_rows(labels, groups["cluster"]), index=groups["account_id"])


def _rows(labels: np.ndarray, clusters: pd.Series) -> np.ndarray:
    """The positions of these cluster labels among the sorted `labels`."""
    return pd.Series(np.arange(len(labels)), index=labels).reindex(clusters).to_numpy()


def _merged(groups: pd.DataFrame, labels: np.ndarray, of: pd.Series,
            target: np.ndarray) -> pd.DataFrame:
    """`groups` with each account in the group its own was merged into (`_agglomerate`)."""
    return groups.assign(cluster=labels[target[of.reindex(groups["account_id"]).to_numpy()]])


def merge_groups(groups: pd.DataFrame, edges: pd.DataFrame, min_ratio: float) -> pd.DataFrame:
    """Merge groups of accounts (account_id, cluster) whose links between them are about as
    dense as the links inside them (average linkage): one operator found in pieces
    becomes one group, while two operators, linked less densely to each other than
    within themselves, stay apart. Pairs are merged best first while the density between
    them is at least `min_ratio` times the lower of their inside densities."""
    if groups.empty:
        return groups
    labels, of = _positions(groups)
    e = edges[edges["src"].isin(of.index) & edges["dst"].isin(of.index)]
    ia, ib = label_of(of, e["src"]), label_of(of, e["dst"])
    w = np.zeros((len(labels), len(labels)))
    np.add.at(w, (ia, ib), e["weight"].to_numpy(dtype=float))
    np.add.at(w, (ib, ia), e["weight"].to_numpy(dtype=float))
    n = of.value_counts().reindex(np.arange(len(labels))).to_numpy(dtype=float)

    def ratio() -> np.ndarray:
        inside = np.diag(w) / np.maximum(n * (n - 1), 1.0)  # diag holds 2x the inside weight
        return w / np.outer(n, n) / np.minimum.outer(inside, inside).clip(min=1e-12)

    def absorb(i: int, j: int) -> None:
        w[i, :] += w[j, :]
        w[:, i] += w[:, j]
        n[i] += n[j]

    return _merged(groups, labels, of, _agglomerate(len(labels), ratio, absorb, min_ratio))


def merge_by_instruments(groups: pd.DataFrame, uses: pd.DataFrame, min_precision: float
                         ) -> pd.DataFrame:
    """Merge groups (account_id, cluster) that share an account key of the operator's own:
    a payment instrument or an organisation used by members of both, and mostly (at least
    `min_precision` of its users) by campaign members, as a campaign indicator is. A
    payer's accounts are one operator however far apart they sit in the graph: a trickle
    of throwaway accounts whose templates slide daily leaves pieces a week apart, linked
    only by the prepaid cards it reuses. A reseller's card, used mostly by its ordinary
    customers, joins nothing.

    `uses` (cluster, kind, key, members, users): per group and key, how many of its
    members use the key and how many accounts use it in all."""
    if groups.empty or uses.empty:
        return groups
    labels, of = _positions(groups)
    total = uses.groupby(["kind", "key"])["members"].transform("sum")
    spread = uses.groupby(["kind", "key"])["cluster"].transform("nunique")
    own = uses[(total >= min_precision * uses["users"]) & (spread >= 2)]
    row = _rows(labels, own["cluster"])
    key = pd.factorize(own["kind"] + "|" + own["key"])[0]
    shares = np.zeros((len(labels), int(key.max()) + 1 if len(key) else 0), dtype=bool)
    shares[row, key] = True
    together = (shares.astype(int) @ shares.T.astype(int)) > 0

    def absorb(i: int, j: int) -> None:
        together[i] |= together[j]
        together[:, i] = together[i]

    return _merged(groups, labels, of,
                   _agglomerate(len(labels), lambda: together.astype(float), absorb, 1.0))


def merge_by_families(groups: pd.DataFrame, families: pd.DataFrame, min_overlap: float
                      ) -> pd.DataFrame:
    """Merge groups (account_id, cluster) that use the same characteristic template families:
    one operator whose accounts sit behind separate infrastructure (a proxy pool per
    country, a card per cell) is linked across its pieces only by its own templates,
    which the chain links between pieces sample too thinly for `merge_groups` to see.

    `families` (cluster, band, users): the families each group uses characteristically
    and how many of its members use each. A group's profile is each family's share of its
    members; the overlap of two groups is the profile they have in common, as a share of
    the smaller profile. Pairs are merged best first while it is at least `min_overlap`.
    Two operators harvesting with the same stock phrasings overlap little: such families
    are used by ordinary accounts too and are not characteristic of either."""
    if groups.empty or families.empty:
        return groups
    labels, of = _positions(groups)
    n = of.value_counts().reindex(np.arange(len(labels))).to_numpy(dtype=float)
    row = _rows(labels, families["cluster"])
    band, _ = pd.factorize(families["band"])
    users = families["users"].to_numpy(dtype=float)
    in_several = (np.bincount(band) >= 2)[band]  # only those can be in common
    cols = np.unique(band[in_several], return_inverse=True)[1]
    m = np.zeros((len(labels), int(cols.max()) + 1 if len(cols) else 0))
    np.add.at(m, (row[in_several], cols), users[in_several])
    own = np.bincount(row[~in_several], weights=users[~in_several], minlength=len(labels))

    def common(i: int) -> np.ndarray:
        return np.minimum(m[i] / n[i], m / n[:, None]).sum(axis=1)

    inter = np.stack([common(i) for i in range(len(labels))])

    def overlap() -> np.ndarray:
        size = m.sum(axis=1) / n + own / n
        return inter / np.minimum.outer(size, size).clip(min=1e-12)

    def absorb(i: int, j: int) -> None:
        m[i] += m[j]
        own[i] += own[j]
        n[i] += n[j]
        inter[i, :] = inter[:, i] = common(i)

    return _merged(groups, labels, of, _agglomerate(len(labels), overlap, absorb, min_overlap))


def components(core: pd.DataFrame, edges: pd.DataFrame, min_size: int) -> pd.DataFrame:
    """Connected groups of core accounts within each cluster, linked by edges among
    themselves; groups smaller than `min_size` are dropped. Returns (account_id, cluster)
    with fresh group numbers."""
    out = []
    if core.empty:
        return pd.DataFrame({"account_id": pd.Series(dtype=str),
                             "cluster": pd.Series(dtype="int64")})
    of = core.set_index("account_id")["cluster"]
    inside = within_clusters(edges, of)
    names = pd.Index(np.sort(core["account_id"].to_numpy()))
    g = ig.Graph(n=len(names), edges=list(zip(names.get_indexer(inside["src"]).tolist(),
                                              names.get_indexer(inside["dst"]).tolist(),
                                              strict=True)))
    for k, comp in enumerate(sorted((sorted(c) for c in g.connected_components()
                                     if len(c) >= min_size), key=lambda c: c[0])):
        out += [(names[i], k) for i in comp]
    return pd.DataFrame(out, columns=["account_id", "cluster"]).astype({"cluster": "int64"})
