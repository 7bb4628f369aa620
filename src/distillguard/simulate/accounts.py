"""Accounts of a scenario: identity, payment, network and behaviour parameters, as arrays.

Built cohort by cohort (a handful of Python iterations) and vectorised inside a cohort.
Groups (an app's accounts, a campus, a hydra sub-cluster, a reseller pool) share
resources; populations naming the same `infra` share them across populations.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from distillguard.contract import CAPABILITIES
from distillguard.simulate import network as net
from distillguard.simulate.populations import (
    MODELS_BEFORE,
    POPULATIONS,
    PUBLIC_DOMAINS,
    UA_PROFILES,
    UNIVERSITY_DOMAINS,
    USER_AGENTS,
    Population,
)
from distillguard.simulate.scenarios import Cohort, Scenario

POOL = 4          # own addresses per account
N_TOOLS = 36      # size of the grammar's tool vocabulary
CODING_TOOLS = 10  # the first tools of the vocabulary are editor/coding tools
_TLDS = ("com", "io", "ai", "dev", "co", "net", "app", "tech")
_COMPANY = ("bright", "nova", "lumen", "pocket", "quill", "sprout", "harbor", "zephyr", "cobalt",
            "maple", "orbit", "pixel", "tidal", "willow", "ember", "kite", "summit", "juniper",
            "copper", "aurora", "pebble", "cedar", "fable", "vector", "delta", "lattice")
_COMPANY2 = ("works", "labs", "soft", "data", "cloud", "ly", "hq", "systems", "ai", "stack",
             "forge", "loop", "grid", "base")


def stable_int(*parts: object) -> int:
    """A platform-independent 63-bit hash (Python's hash() is salted per process)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def opaque_ids(prefix: str, seed: int, kind: str, start: int, n: int) -> list[str]:
    """Opaque ids: a keyed hash of a counter, so neither order nor value reveals the population."""
    return [
        prefix + hashlib.blake2b(f"{seed}|{kind}|{i}".encode(), digest_size=8).hexdigest()
        for i in range(start, start + n)
    ]


def _choice(rng: np.random.Generator, weights: dict[str, float], n: int) -> np.ndarray:
    keys = list(weights)
    p = np.array([weights[k] for k in keys], dtype=float)
    return np.array(keys, dtype=object)[rng.choice(len(keys), size=n, p=p / p.sum())]


def _cumulative(p: np.ndarray) -> np.ndarray:
    """Row-wise cumulative probabilities whose last column is exactly 1 (no overflow bucket)."""
    cum = np.cumsum(p, axis=1)
    cum /= cum[:, -1:]
    cum[cum > 1.0 - 1e-9] = 1.0
    return cum


def _company_domain(rng: np.random.Generator) -> str:
    number = "" if rng.random() < 0.6 else str(rng.integers(2, 99))
    return (f"{_COMPANY[rng.integers(len(_COMPANY))]}{_COMPANY2[rng.integers(len(_COMPANY2))]}"
            f"{number}.{_TLDS[rng.integers(len(_TLDS))]}")


@dataclass
class Group:
    """Resources shared by one group of accounts."""

    gid: int
    country: str
    ips: np.ndarray            # uint32 addresses
    asn_rows: np.ndarray       # index into network.ASNS per address
    org_id: str
    card: str
    company_domain: str
    campus_domain: str
    throwaway: list[str]
    card_salt: tuple[str, int]     # shared card i is hash(seed, salt, i)
    toolset_ids: np.ndarray        # the group's shared toolsets (ide products, operators)
    app_index: int


@dataclass
class Accounts:
    """Per-account arrays (generation order) plus the group table."""

    account_id: list[str] = field(default_factory=list)
    cols: dict[str, list[np.ndarray]] = field(default_factory=dict)
    groups: list[Group] = field(default_factory=list)
    toolsets: list[np.ndarray] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    populations: list[str] = field(default_factory=list)

    def add(self, **arrays: np.ndarray) -> None:
        for k, v in arrays.items():
            self.cols.setdefault(k, []).append(v)

    def finish(self) -> None:
        """Concatenate the per-cohort pieces into one array per column."""
        self.a = {k: np.concatenate(v) for k, v in self.cols.items()}
        self.cols = {}
        self.n = len(self.account_id)
        g_ips = [g.ips for g in self.groups]
        self.group_len = np.array([len(x) for x in g_ips], dtype=np.int64)
        self.group_off = np.concatenate([[0], np.cumsum(self.group_len)[:-1]]).astype(np.int64)
        self.group_ips = np.concatenate(g_ips).astype(np.uint32)
        self.group_asn = np.concatenate([g.asn_rows for g in self.groups]).astype(np.int64)
        self.tool_len = np.array([len(t) for t in self.toolsets], dtype=np.int64)
        self.tool_off = np.concatenate([[0], np.cumsum(self.tool_len)[:-1]]).astype(np.int64)
        self.tool_flat = np.concatenate(self.toolsets).astype(np.int64)


class AccountBuilder:
    """Builds `Accounts` for a scenario; one instance per generation run."""

    def __init__(self, scenario: Scenario, seed: int, system_index: dict[str, list[int]]) -> None:
        self.scenario, self.seed = scenario, seed
        self.system_index = system_index  # system prompt indices accounts may pick, per kind
        self.out = Accounts(styles=["organic"])  # attackers' cover traffic is organic too
        self._groups: dict[tuple[str, int], Group] = {}

    # ---------------- groups ----------------
    def group(self, pop: Population, key: str, g: int) -> Group:
        if (key, g) in self._groups:
            return self._groups[(key, g)]
        rng = np.random.default_rng([self.seed, stable_int("group", key), g])
        country = str(rng.choice(net.COUNTRY_CODES, p=net.COUNTRY_WEIGHTS))
        ips, rows = self._group_addresses(rng, pop, country)
        if pop.group_net is not None and pop.group_net.kind in ("mobile", "campus"):
            country = str(net.ASN_COUNTRY[rows[0]])
        gid = len(self.out.groups)
        throwaway = [f"{_COMPANY[rng.integers(len(_COMPANY))]}mail.{t}"
                     for t in rng.choice(_TLDS, size=2)]
        toolsets = self._group_toolsets(rng, pop, gid)
        first_tool = len(self.out.toolsets)
        self.out.toolsets.extend(toolsets)
        grp = Group(
            gid=gid, country=country, ips=ips, asn_rows=rows,
            org_id="org_" + f"{stable_int(self.seed, 'org', key, g):016x}",
            card="pm_" + f"{stable_int(self.seed, 'card', key, g):016x}",
            company_domain=_company_domain(rng),
            campus_domain="cs." + UNIVERSITY_DOMAINS[rng.integers(len(UNIVERSITY_DOMAINS))],
            throwaway=throwaway,
            card_salt=(key, g),
            toolset_ids=np.arange(first_tool, first_tool + len(toolsets)),
            app_index=int(rng.integers(0, 1 << 30)),
        )
        self.out.groups.append(grp)
        self._groups[(key, g)] = grp
        return grp

    @staticmethod
    def _group_addresses(rng: np.random.Generator, pop: Population,
                         country: str) -> tuple[np.ndarray, np.ndarray]:
        gn = pop.group_net
        if gn is None:
            return np.zeros(0, np.uint32), np.zeros(0, np.int64)
        candidates = net.asn_rows(gn.kind, country if gn.kind in ("mobile", "campus") else None)
        asn_pick = rng.choice(candidates, size=min(gn.asns, len(candidates)), replace=False)
        ips, rows = [], []
        for b in range(gn.blocks):
            row = asn_pick[b % len(asn_pick)]
            block = net.ASN_BLOCK[row] | (np.uint32(rng.integers(0, 256)) << np.uint32(8))
            hosts = rng.choice(np.arange(1, 255), size=min(gn.hosts, 254), replace=False)
            ips.append(block | hosts.astype(np.uint32))
            rows.append(np.full(len(hosts), row))
        return np.concatenate(ips).astype(np.uint32), np.concatenate(rows)

    @staticmethod
    def _group_toolsets(rng: np.random.Generator, pop: Population, gid: int) -> list[np.ndarray]:
        if pop.tools == "ide":
            product = gid % 3
            base = np.arange(CODING_TOOLS)
            return [np.sort(np.delete(base, [product, 9 - product]))]
        if pop.tools == "operator":
            return [np.sort(rng.choice(N_TOOLS, size=int(rng.integers(4, 9)), replace=False))
                    for _ in range(2)]
        return []

    # ---------------- cohorts ----------------
    def cohort(self, index: int, cohort: Cohort) -> None:
        pop = POPULATIONS[cohort.population]
        n, days = cohort.accounts, self.scenario.days
        rng = np.random.default_rng([self.seed, index, 1])
        key = pop.infra or pop.name
        gidx = rng.permutation(np.arange(n) % cohort.groups)
        groups = [self.group(pop, key, g) for g in range(cohort.groups)]
        gid = np.array([groups[g].gid for g in gidx], dtype=np.int64)

        # declared country and time zone
        if pop.tz_from_group:
            country = np.array([groups[g].country for g in gidx], dtype=object)
        else:
            country = rng.choice(net.COUNTRY_CODES, size=n, p=net.COUNTRY_WEIGHTS).astype(object)
        code_index = {c: i for i, c in enumerate(net.COUNTRY_CODES)}
        tz = net.COUNTRY_TZ[[code_index[c] for c in country]]

        pool_ip, pool_asn = self._own_pools(rng, pop, country, n)
        grp_ip, grp_asn = pool_ip[:, :2].copy(), pool_asn[:, :2].copy()
        for g, grp in enumerate(groups):
            members = np.flatnonzero(gidx == g)
            if len(grp.ips) and len(members):
                pick = rng.integers(0, len(grp.ips), size=(len(members), 2))
                grp_ip[members], grp_asn[members] = grp.ips[pick], grp.asn_rows[pick]
        signup_from_group = rng.random(n) < pop.group_share
        signup_ip = np.where(signup_from_group, grp_ip[:, 0], pool_ip[:, 0])
        signup_asn = np.where(signup_from_group, grp_asn[:, 0], pool_asn[:, 0])

        created_day, first_day, last_day = self._lifecycle(rng, pop, n, days)
        weight = rng.lognormal(0.0, pop.volume_sigma, size=n)
        dow = (np.arange(days) + self.scenario.start_dow) % 7
        wf = np.where(dow >= 5, pop.weekend, 1.0)
        cum_wf = np.concatenate([[0.0], np.cumsum(wf)])
        window = cum_wf[last_day + 1] - cum_wf[first_day]
        daily_mean = weight * cohort.exchanges / max(float((weight * window).sum()), 1e-9)

        cats = np.array([pop.mix.get(c, 0.0) for c in CAPABILITIES])
        mix = np.zeros((n, len(CAPABILITIES)))
        nz = cats > 0
        mix[:, nz] = rng.dirichlet(cats[nz] * 40.0, size=n)
        models = list(pop.models)
        model_mix = rng.dirichlet(np.array([pop.models[m] for m in models]) * 20.0, size=n)
        model_cum = np.zeros((n, 3))
        for j, m in enumerate(models):
            model_cum[:, list(MODELS_BEFORE).index(m)] = model_mix[:, j]
        model_cum = _cumulative(model_cum)

        ua_w = UA_PROFILES[pop.ua]
        ua_p = np.array([ua_w.get(u, 0.0) for u in USER_AGENTS])
        ua = rng.choice(len(USER_AGENTS), size=(n, 2), p=ua_p / ua_p.sum())

        toolset = self._account_toolsets(rng, pop, groups, gidx)
        system = self._system_prompts(rng, pop, groups, gidx)
        style = self._style(pop, groups, gidx)

        self.out.account_id.extend(
            opaque_ids("acct_", self.seed, "account", len(self.out.account_id), n))
        org = self._orgs(pop, groups, gidx, n)
        card = self._cards(rng, pop, groups, gidx, n)
        email = self._emails(rng, pop, groups, gidx, n)
        pop_index = self._index(self.out.populations, pop.name)
        n_keys = np.minimum(8, 1 + rng.poisson(3.0 if pop.shared_org else 0.4, size=n))
        self.out.add(
            pop=np.full(n, pop_index), gid=gid, country=country, tz=tz,
            pool_ip=pool_ip, pool_asn=pool_asn, grp_ip=grp_ip, grp_asn=grp_asn,
            signup_ip=signup_ip, signup_asn=signup_asn, created_day=created_day,
            first_day=first_day, last_day=last_day, daily_mean=daily_mean,
            cat_cum=_cumulative(mix), model_cum=model_cum, ua=ua, toolset=toolset,
            system=system, style=style, org=org, card=card, email=email, n_keys=n_keys,
            verification=_choice(rng, pop.verification, n),
        )

    @staticmethod
    def _own_pools(rng: np.random.Generator, pop: Population, country: np.ndarray,
                   n: int) -> tuple[np.ndarray, np.ndarray]:
        kind = _choice(rng, pop.network, n)
        rows = np.empty((n, POOL), dtype=np.int64)
        for k in np.unique(kind):
            members = np.flatnonzero(kind == k)
            local = k in ("residential", "mobile", "campus")
            for c in np.unique(country[members]):
                sub = members[country[members] == c]
                cand = net.asn_rows(k, str(c) if local else None)
                rows[sub, 0] = rng.choice(cand, size=len(sub))
                mobile = net.asn_rows("mobile", str(c))
                rows[sub, 2] = rng.choice(mobile if local else cand, size=len(sub))
        rows[:, 1] = rows[:, 0]
        rows[:, 3] = rows[:, 0]
        ips = net.random_hosts(rng, rows.ravel()).reshape(n, POOL)
        return ips, rows

    def _lifecycle(self, rng: np.random.Generator, pop: Population, n: int,
                   days: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo, hi = pop.age_days
        late = rng.random(n) < pop.churn / 2
        if pop.waves:
            centres = rng.uniform(-hi, -lo, size=pop.waves)
            created = centres[rng.integers(0, pop.waves, size=n)] + rng.normal(0, 1.5, size=n)
            created = np.minimum(created, -0.1)
            inside = rng.uniform(1.0, max(1.5, 0.6 * days), size=2)
            created[late] = inside[rng.integers(0, 2, size=late.sum())] + rng.normal(
                0, 0.7, size=late.sum())
        else:
            created = -rng.uniform(lo, hi, size=n)
            created[late] = rng.uniform(0.0, 0.8 * days, size=late.sum())
        created = np.clip(created, -5000.0, days - 2.0)
        first = np.where(created < 0, 0, np.floor(created).astype(np.int64) + 1)
        first = np.minimum(first, days - 1).astype(np.int64)
        stop = rng.random(n) < pop.churn / 2
        last = np.full(n, days - 1, dtype=np.int64)
        last[stop] = rng.integers(first[stop], days)
        return created, first, last

    def _account_toolsets(self, rng: np.random.Generator, pop: Population, groups: list[Group],
                          gidx: np.ndarray) -> np.ndarray:
        if pop.tools in ("ide", "operator"):
            out = np.empty(len(gidx), dtype=np.int64)
            for g, grp in enumerate(groups):
                members = np.flatnonzero(gidx == g)
                ids = grp.toolset_ids
                out[members] = ids[rng.integers(0, len(ids), size=len(members))]
            return out
        first = len(self.out.toolsets)
        for _ in range(len(gidx)):
            size = int(rng.integers(2, 7))
            self.out.toolsets.append(np.sort(rng.choice(np.arange(CODING_TOOLS, N_TOOLS),
                                                        size=size, replace=False)))
        return np.arange(first, first + len(gidx), dtype=np.int64)

    def _system_prompts(self, rng: np.random.Generator, pop: Population, groups: list[Group],
                        gidx: np.ndarray) -> np.ndarray:
        n = len(gidx)
        if pop.system == "none":
            if pop.style == "coursework":
                tutor = self.system_index["tutor"]
                return np.array(tutor)[rng.integers(0, len(tutor), size=n)]
            return np.full(n, -1)
        if pop.system == "app":
            apps = self.system_index["app"]
            return np.array([apps[groups[g].app_index % len(apps)] for g in gidx])
        choices = np.array(self.system_index[pop.system])
        return choices[rng.integers(0, len(choices), size=n)]

    def _style(self, pop: Population, groups: list[Group], gidx: np.ndarray) -> np.ndarray:
        if pop.style == "organic":
            keys = ["organic"] * len(gidx)
        elif pop.style == "distill":
            keys = [f"distill:{pop.name}"] * len(gidx)
        elif pop.style == "harness":
            keys = ["harness"] * len(gidx)
        elif pop.style == "batch":
            keys = [f"batch:{groups[g].gid % 2}" for g in gidx]
        else:
            keys = [f"coursework:{groups[g].gid}" for g in gidx]
        return np.array([self._index(self.out.styles, k) for k in keys], dtype=np.int64)

    def _orgs(self, pop: Population, groups: list[Group], gidx: np.ndarray,
              n: int) -> np.ndarray:
        if pop.shared_org:
            return np.array([groups[g].org_id for g in gidx], dtype=object)
        start = len(self.out.account_id) - n
        return np.array(opaque_ids("org_", self.seed, "org", start, n), dtype=object)

    def _cards(self, rng: np.random.Generator, pop: Population, groups: list[Group],
               gidx: np.ndarray, n: int) -> np.ndarray:
        start = len(self.out.account_id) - n
        own = np.array(opaque_ids("pm_", self.seed, "card", start, n), dtype=object)
        if pop.shared_org:
            return np.array([groups[g].card for g in gidx], dtype=object)
        shared = rng.random(n) < pop.card_share
        for g, grp in enumerate(groups):
            members = np.flatnonzero(shared & (gidx == g))
            if len(members):
                n_cards = max(1, int(np.ceil(len(members) / pop.cards_per)))
                cards = np.array([f"pm_{stable_int(self.seed, 'shared', *grp.card_salt, i):016x}"
                                  for i in range(n_cards)], dtype=object)
                own[members] = cards[rng.integers(0, n_cards, size=len(members))]
        return own

    def _emails(self, rng: np.random.Generator, pop: Population, groups: list[Group],
                gidx: np.ndarray, n: int) -> np.ndarray:
        kind = _choice(rng, pop.email, n)
        out = _choice(rng, PUBLIC_DOMAINS, n)
        for i in np.flatnonzero(kind != "public"):
            grp = groups[gidx[i]]
            k = kind[i]
            if k == "company":
                out[i] = grp.company_domain if pop.shared_org else _company_domain(rng)
            elif k == "campus":
                out[i] = grp.campus_domain
            elif k == "edu_other":
                out[i] = UNIVERSITY_DOMAINS[rng.integers(len(UNIVERSITY_DOMAINS))]
            else:
                out[i] = grp.throwaway[rng.integers(len(grp.throwaway))]
        return out

    @staticmethod
    def _index(table: list[str], key: str) -> int:
        if key not in table:
            table.append(key)
        return table.index(key)

    def build(self) -> Accounts:
        for i, cohort in enumerate(self.scenario.cohorts):
            self.cohort(i, cohort)
        self.out.finish()
        return self.out


def accounts_table(acc: Accounts, scenario: Scenario) -> tuple[pa.Table, pa.Table]:
    """The contract's accounts table and the truth table, both sorted by (opaque) account id."""
    created_us = scenario.start_us + (acc.a["created_day"] * 86_400e6).astype(np.int64)
    pops = [POPULATIONS[p] for p in acc.populations]
    pop_idx = acc.a["pop"]
    order = np.argsort(np.array(acc.account_id))
    ids = pa.array(acc.account_id).take(pa.array(order))
    accounts = pa.table({
        "account_id": ids,
        "created_at": pa.array(created_us[order], pa.timestamp("us", tz="UTC")),
        "org_id": pa.array(acc.a["org"][order], pa.string()),
        "email_domain": pa.array(acc.a["email"][order], pa.string()),
        "payment_fingerprint": pa.array(acc.a["card"][order], pa.string()),
        "signup_ip": net.ip_strings(acc.a["signup_ip"][order]),
        "signup_asn": pa.array(net.ASN_NUM[acc.a["signup_asn"][order]], pa.int64()),
        "country": pa.array(acc.a["country"][order], pa.string()),
        "verification_path": pa.array(acc.a["verification"][order], pa.string()),
        "allowlisted": pa.array(np.array([p.allowlisted for p in pops])[pop_idx][order]),
    })
    truth = pa.table({
        "account_id": ids,
        "operator": pa.array([pops[i].operator for i in pop_idx[order]], pa.string()),
        "population": pa.array([acc.populations[i] for i in pop_idx[order]], pa.string()),
    })
    return accounts, truth
