"""One day of exchanges for every account, fully vectorised with numpy and Arrow.

Per day: which accounts are active and how much they send, when (hour-of-day profile in
local time, bursts), what (capability, prompt pool, model, tools, image, thinking), from
where (own, group, rotating or fresh addresses) and with what outcome (tokens, status).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from distillguard.contract import CAPABILITIES
from distillguard.simulate import network as net
from distillguard.simulate.accounts import Accounts, opaque_ids
from distillguard.simulate.grammar import load
from distillguard.simulate.populations import (
    MODELS_BEFORE,
    NEW_MODEL,
    ORGANIC_MIX,
    POPULATIONS,
    PROFILES,
    USER_AGENTS,
)
from distillguard.simulate.prompts import PromptBank

CAT = {c: i for i, c in enumerate(CAPABILITIES)}
MODEL_NAMES = [*MODELS_BEFORE, NEW_MODEL]
STATUS = ["ok", "error", "rate_limited"]
# Median output tokens per capability (before a population's out_scale).
OUT_TOKENS = {"coding": 450, "agentic_tool_use": 250, "reasoning_math": 500, "vision": 220,
              "grading_reward": 200, "safety_sensitive": 300, "writing": 400,
              "knowledge_qa": 350, "chat_other": 120}
_PROFILE_NAMES = list(PROFILES)
_PROFILE_CUM = np.array([np.cumsum(p) / np.sum(p) for p in PROFILES.values()])
_ORGANIC_CUM = np.cumsum([ORGANIC_MIX.get(c, 0.0) for c in CAPABILITIES])
_ORGANIC_CUM[-1] = 1.0
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_FLOATS = ("p_active", "weekend", "organic_share", "thinking", "image_share", "out_scale",
           "rate_limited", "error", "turns", "tool_share", "system_share", "group_share",
           "rotate", "p_fresh", "adopt", "adopt_hours")

SCHEMA = pa.schema([
    ("exchange_id", pa.string()), ("ts", pa.timestamp("us", tz="UTC")),
    ("account_id", pa.string()), ("prompt", pa.string()), ("org_id", pa.string()),
    ("api_key_id", pa.string()), ("model", pa.string()), ("ip", pa.string()),
    ("asn", pa.int64()), ("country", pa.string()), ("user_agent", pa.string()),
    ("system_prompt", pa.string()), ("n_messages", pa.int64()),
    ("tool_names", pa.list_(pa.string())), ("has_image", pa.bool_()), ("thinking", pa.bool_()),
    ("input_tokens", pa.int64()), ("output_tokens", pa.int64()), ("status", pa.string()),
])


def _hex_ids(prefix: str, values: np.ndarray) -> pa.Array:
    """'prefix' + 16 hex digits per uint64, without per-row Python."""
    raw = np.ascontiguousarray(values.astype(">u8")).view(np.uint8).reshape(-1, 8)
    text = np.ascontiguousarray(_HEX[raw]).view("S16").ravel()
    body = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(text), [None, pa.py_buffer(text.tobytes())])
    return pc.binary_join_element_wise(prefix, body.cast(pa.binary()).cast(pa.string()), "")


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection, so distinct counters give distinct opaque ids."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class DayContext:
    """Everything a day needs that does not change from day to day."""

    acc: Accounts
    bank: PromptBank
    seed: int
    start_us: int
    start_dow: int
    release_us: int
    system_texts: pa.Array
    system_len: np.ndarray


class TrafficModel:
    """Generates the exchanges of one day at a time."""

    def __init__(self, ctx: DayContext) -> None:
        self.ctx = ctx
        acc = ctx.acc
        pops = [POPULATIONS[p] for p in acc.populations]
        pi = acc.a["pop"]
        # per-account copies of population parameters
        self.p = {f: np.array([getattr(p, f) for p in pops], dtype=float)[pi] for f in _FLOATS}
        self.burst = np.array([p.burst for p in pops])[pi]
        self.sync = np.array([p.sync for p in pops])[pi]
        self.profile = np.array([_PROFILE_NAMES.index(p.profile) for p in pops])[pi]
        self.fresh_kind = np.array([p.fresh_kind for p in pops])[pi]
        self.organic_style = acc.styles.index("organic")
        self.ids = pa.array(acc.account_id)
        self.orgs = pa.array(acc.a["org"], pa.string())
        n_keys = acc.a["n_keys"]
        self.key_off = np.concatenate([[0], np.cumsum(n_keys)[:-1]])
        self.keys = pa.array(opaque_ids("key_", ctx.seed, "key", 0, int(n_keys.sum())))
        self.tools = pa.array(load().styles["tools"])
        self.ua = pa.array(USER_AGENTS)
        self.models = pa.array(MODEL_NAMES)
        self.status = pa.array(STATUS)
        self.countries = pa.array(net.ASN_COUNTRY)
        self.out_mu = np.log([OUT_TOKENS[c] for c in CAPABILITIES])

    def day(self, day: int, first_row: int) -> tuple[pa.Table, np.ndarray, np.ndarray] | None:
        """The day's exchanges sorted by time, with row counts per population and capability."""
        ctx, acc, p = self.ctx, self.ctx.acc, self.p
        a = acc.a
        rng = np.random.default_rng([ctx.seed, 11, day])
        n = acc.n
        alive = (a["first_day"] <= day) & (a["last_day"] >= day)
        weekend = (ctx.start_dow + day) % 7 >= 5
        wf = p["weekend"] if weekend else np.ones(n)
        active = alive & (rng.random(n) < p["p_active"])
        lam = a["daily_mean"] * wf / p["p_active"]
        counts = np.where(active, rng.poisson(lam), 0)
        ai = np.repeat(np.arange(n), counts)
        m = len(ai)
        if m == 0:
            return None

        ts = self._timestamps(rng, day, ai)
        order = np.argsort(ts, kind="stable")
        ai, ts = ai[order], ts[order]

        # capability and prompt
        organic = rng.random(m) < p["organic_share"][ai]
        cum = a["cat_cum"][ai]
        cum[organic] = _ORGANIC_CUM
        cat = (rng.random(m)[:, None] > cum).sum(axis=1)
        style = np.where(organic, self.organic_style, a["style"][ai])
        prompt = ctx.bank.pick(style, cat, rng.random(m))

        # model, with the move to the newly released model
        mi = (rng.random(m)[:, None] > a["model_cum"][ai]).sum(axis=1)
        since = (ts - ctx.release_us).astype(float)
        p_new = np.where(since > 0, p["adopt"][ai] * (1 - np.exp(
            -np.maximum(since, 0) / (p["adopt_hours"][ai] * 3.6e9))), 0.0)
        model = np.where(rng.random(m) < p_new, len(MODEL_NAMES) - 1, mi)

        # request shape
        tooled = (cat == CAT["agentic_tool_use"]) | (
            (cat == CAT["coding"]) & (rng.random(m) < p["tool_share"][ai]))
        turns = rng.geometric(1.0 / np.maximum(p["turns"][ai], 1.0))
        n_messages = 2 * turns - 1 + np.where(tooled, 2 * rng.poisson(2.0, m), 0)
        tool_names, n_tools = self._tools(ai, tooled)
        has_image = (cat == CAT["vision"]) | (rng.random(m) < p["image_share"][ai])
        think_p = p["thinking"][ai] * np.where(cat == CAT["reasoning_math"], 1.5, 1.0)
        thinking = rng.random(m) < think_p
        sys_idx = a["system"][ai]
        has_sys = (sys_idx >= 0) & (rng.random(m) < p["system_share"][ai])
        system = ctx.system_texts.take(pa.array(np.where(has_sys, sys_idx, 0), mask=~has_sys))

        ip, asn_row = self._addresses(rng, ai)
        ua = a["ua"][ai, (rng.random(m) > 0.85).astype(np.int64)]
        key = self.key_off[ai] + (rng.random(m) * a["n_keys"][ai]).astype(np.int64)

        # tokens and outcome
        plen = pc.utf8_length(prompt).to_numpy(zero_copy_only=False)
        history = (n_messages - 1) * rng.lognormal(np.log(90), 0.6, m)
        input_tokens = (plen // 4 + 1 + np.where(has_sys, ctx.system_len[sys_idx], 0) // 4
                        + history + has_image * rng.integers(600, 1600, m) + 45 * n_tools)
        output = rng.lognormal(self.out_mu[cat], 0.7) * p["out_scale"][ai]
        output += np.where(thinking, rng.lognormal(np.log(800), 0.8, m), 0.0)
        r = rng.random(m)
        limited = p["rate_limited"][ai]
        status = np.where(r < limited, 2, np.where(r < limited + p["error"][ai], 1, 0))
        output = np.where(status == 0, output, 0.0)

        ids = _mix64(np.arange(first_row, first_row + m, dtype=np.uint64)
                     + np.uint64(ctx.seed * 0x9E3779B1 % (1 << 63)))
        cols = {
            "exchange_id": _hex_ids("ex_", ids),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "account_id": self.ids.take(pa.array(ai)),
            "prompt": prompt,
            "org_id": self.orgs.take(pa.array(ai)),
            "api_key_id": self.keys.take(pa.array(key)),
            "model": self.models.take(pa.array(model)),
            "ip": net.ip_strings(ip),
            "asn": pa.array(net.ASN_NUM[asn_row]),
            "country": self.countries.take(pa.array(asn_row)),
            "user_agent": self.ua.take(pa.array(ua)),
            "system_prompt": system,
            "n_messages": pa.array(n_messages.astype(np.int64)),
            "tool_names": tool_names,
            "has_image": pa.array(has_image),
            "thinking": pa.array(thinking),
            "input_tokens": pa.array(input_tokens.astype(np.int64)),
            "output_tokens": pa.array(output.astype(np.int64)),
            "status": self.status.take(pa.array(status)),
        }
        pops = np.bincount(a["pop"][ai], minlength=len(acc.populations))
        return pa.table(cols, schema=SCHEMA), pops, np.bincount(cat, minlength=len(CAPABILITIES))

    def _timestamps(self, rng: np.random.Generator, day: int, ai: np.ndarray) -> np.ndarray:
        """Local-time hour profiles, bursts around 1-3 centres per account, shifted to UTC."""
        a, m = self.ctx.acc.a, len(ai)
        prof = self.profile[ai]
        hour = np.empty(m)
        u = rng.random(m)
        for k in range(len(_PROFILE_CUM)):
            sel = prof == k
            hour[sel] = np.searchsorted(_PROFILE_CUM[k], u[sel], side="right")
        sec = hour * 3600 + rng.random(m) * 3600
        n = self.ctx.acc.n
        centres = rng.random((n, 3))
        for k in range(len(_PROFILE_CUM)):
            sel = self.profile == k
            centres[sel] = np.searchsorted(_PROFILE_CUM[k], centres[sel], side="right")
        centres = centres * 3600 + rng.random((n, 3)) * 3600
        # one scheduler per group (in UTC, whatever country the accounts claim): its
        # accounts burst together, each a few minutes apart
        shared = rng.random((len(self.ctx.acc.groups), 3)) * 86400
        sync = self.sync
        centres[sync] = (shared[a["gid"][sync]] + a["tz"][sync, None] * 3600
                         + rng.normal(0, 600, (sync.sum(), 3)))
        n_bursts = rng.integers(1, 4, n)
        b = self.burst[ai]
        k = (rng.random(m) * n_bursts[ai]).astype(np.int64)
        sec[b] = centres[ai[b], k[b]] + rng.normal(0, 1200, b.sum())
        sec = np.mod(sec - a["tz"][ai] * 3600, 86400)
        return self.ctx.start_us + day * 86_400_000_000 + (sec * 1e6).astype(np.int64)

    def _tools(self, ai: np.ndarray, tooled: np.ndarray) -> tuple[pa.Array, np.ndarray]:
        acc = self.ctx.acc
        ts_id = acc.a["toolset"][ai]
        lens = np.where(tooled, acc.tool_len[ts_id], 0)
        offsets = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
        starts = np.repeat(acc.tool_off[ts_id], lens)
        within = np.arange(offsets[-1]) - np.repeat(offsets[:-1], lens)
        values = self.tools.take(pa.array(acc.tool_flat[starts + within]))
        return pa.ListArray.from_arrays(pa.array(offsets), values), lens

    def _addresses(self, rng: np.random.Generator, ai: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Own pool (mostly the primary), the group's addresses, rotation, or a fresh address."""
        acc, p, m = self.ctx.acc, self.p, len(ai)
        a = acc.a
        slot = np.where(rng.random(m) < 0.7, 0, rng.integers(1, 4, m))
        ip, asn = a["pool_ip"][ai, slot], a["pool_asn"][ai, slot]
        grp = rng.random(m) < p["group_share"][ai]
        gs = rng.integers(0, 2, m)
        ip[grp], asn[grp] = a["grp_ip"][ai[grp], gs[grp]], a["grp_asn"][ai[grp], gs[grp]]
        gid = a["gid"][ai]
        rot = grp & (rng.random(m) < p["rotate"][ai]) & (acc.group_len[gid] > 0)
        pick = acc.group_off[gid[rot]] + (rng.random(rot.sum()) * acc.group_len[gid[rot]]).astype(
            np.int64)
        ip[rot], asn[rot] = acc.group_ips[pick], acc.group_asn[pick]
        fresh = rng.random(m) < p["p_fresh"][ai]
        for kind in np.unique(self.fresh_kind[ai[fresh]]):
            sel = np.flatnonzero(fresh & (self.fresh_kind[ai] == kind))
            rows = rng.choice(net.asn_rows(str(kind)), size=len(sel))
            ip[sel], asn[sel] = net.random_hosts(rng, rows), rows
        return ip, asn
