"""Behaviour models of every population: benign confounders and attacking campaigns, as data.

Each `Population` says how its accounts look (identity, payment, network, client) and how
they behave (volume spread, timing, capability mix, prompt style, model adoption). The
numbers are chosen so that every signal a detector may use is present but noisy and
partial, and so that each attacker-like trait also occurs in some benign population.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Shared client mix: every user agent here is used by benign and attacking accounts alike.
USER_AGENTS: tuple[str, ...] = (
    "anthropic-sdk-python/0.42.0", "anthropic-sdk-python/0.39.0", "anthropic-typescript/0.33.1",
    "openai-python/1.59.7", "openai-node/4.77.0", "langchain-core/0.3.29", "litellm/1.57.4",
    "python-httpx/0.28.1", "python-requests/2.32.3", "axios/1.7.9", "Go-http-client/2.0",
    "curl/8.5.0", "okhttp/4.12.0", "vercel-ai-sdk/4.0.22", "llama-index/0.12.10",
    "cline/3.2.0", "continue/0.9.2", "aider/0.70.0", "zed/0.170.1",
)
UA_PROFILES: dict[str, dict[str, float]] = {
    "sdk": {"anthropic-sdk-python/0.42.0": 25, "anthropic-sdk-python/0.39.0": 10,
            "anthropic-typescript/0.33.1": 12, "openai-python/1.59.7": 10,
            "python-httpx/0.28.1": 8, "python-requests/2.32.3": 8, "langchain-core/0.3.29": 7,
            "litellm/1.57.4": 6, "openai-node/4.77.0": 5, "curl/8.5.0": 2,
            "Go-http-client/2.0": 3, "llama-index/0.12.10": 4},
    "app": {"openai-node/4.77.0": 20, "anthropic-typescript/0.33.1": 20,
            "anthropic-sdk-python/0.42.0": 20, "okhttp/4.12.0": 12, "Go-http-client/2.0": 10,
            "vercel-ai-sdk/4.0.22": 10, "axios/1.7.9": 8},
    "ide": {"cline/3.2.0": 30, "continue/0.9.2": 25, "aider/0.70.0": 20, "zed/0.170.1": 10,
            "anthropic-sdk-python/0.42.0": 15},
    "script": {"anthropic-sdk-python/0.42.0": 30, "python-httpx/0.28.1": 18,
               "python-requests/2.32.3": 18, "openai-python/1.59.7": 14, "litellm/1.57.4": 10,
               "anthropic-sdk-python/0.39.0": 6, "curl/8.5.0": 4},
}
PUBLIC_DOMAINS: dict[str, float] = {
    "gmail.com": 40, "outlook.com": 10, "hotmail.com": 6, "yahoo.com": 6, "icloud.com": 5,
    "proton.me": 4, "qq.com": 4, "163.com": 3, "naver.com": 2, "gmx.de": 2, "yandex.com": 1,
    "mail.com": 1, "aol.com": 1, "126.com": 1, "web.de": 1, "yahoo.co.jp": 1,
}
UNIVERSITY_DOMAINS: tuple[str, ...] = (
    "stanford.edu", "mit.edu", "cmu.edu", "berkeley.edu", "ox.ac.uk", "cam.ac.uk", "ethz.ch",
    "tum.de", "nus.edu.sg", "u-tokyo.ac.jp", "snu.ac.kr", "iitb.ac.in", "usp.br", "utoronto.ca",
    "unimelb.edu.au", "tsinghua.edu.cn", "hku.hk", "ntu.edu.tw", "uva.nl", "uw.edu",
)
MODELS_BEFORE: dict[str, float] = {"atlas-3": 0.62, "atlas-3-mini": 0.28, "atlas-2": 0.10}
NEW_MODEL = "atlas-4"
RELEASED_BEFORE: dict[str, float] = {"atlas-2": 420.0, "atlas-3": 150.0, "atlas-3-mini": 75.0}

HUMAN = (1, .6, .4, .3, .3, .4, .8, 1.5, 2.5, 3.5, 4, 4, 3.5, 3.8, 4, 3.8, 3.5, 3, 2.8, 3, 3.2,
         3, 2.5, 1.6)
APP = tuple(1.5 + h / 2 for h in HUMAN)
CLASS = (1.2, .6, .2, .1, .1, .1, .2, .5, 1.5, 3, 3.5, 3.5, 2, 3, 3.5, 3.5, 3, 2, 1.5, 2, 2.5, 3,
         3, 2.5)
FLAT = (1.0,) * 24
NIGHT = tuple(6.0 if 1 <= h <= 4 else 0.05 for h in range(24))
PROFILES: dict[str, tuple[float, ...]] = {
    "human": HUMAN, "app": APP, "class": CLASS, "flat": FLAT, "night": NIGHT}


@dataclass(frozen=True)
class GroupNet:
    """Addresses a group of accounts shares: `blocks` /24s over `asns` ASNs of one kind."""

    kind: str
    asns: int = 1
    blocks: int = 1
    hosts: int = 4


@dataclass(frozen=True)
class Population:
    """How one population's accounts look and behave. Probabilities are per account or row."""

    name: str
    mix: dict[str, float]
    operator: str | None = None
    # prompts
    style: str = "organic"          # organic | distill | harness | batch | coursework
    breadth: float = 0.3            # share of distill frames/tasks an operator uses (paraphrase)
    organic_share: float = 0.0      # rows with organic prompts mixed in as cover
    system: str = "none"            # none | generic | app | ide
    system_share: float = 0.3
    # timing and volume
    profile: str = "human"          # hour-of-day profile (local time)
    burst: bool = False             # rows cluster in 1-3 bursts per active day
    sync: bool = False              # bursts follow the group's shared schedule (one scheduler)
    p_active: float = 0.5           # chance an account is active on a weekday
    weekend: float = 0.5            # activity factor on Saturday and Sunday
    volume_sigma: float = 0.8       # lognormal spread of per-account volume
    churn: float = 0.1              # accounts that start late or stop early
    tz_from_group: bool = False     # one time zone for the whole group (campus, app market)
    # request shape
    turns: float = 1.5              # mean user turns (n_messages ~ 2*turns - 1)
    tools: str = "none"             # none | random | ide | operator
    tool_share: float = 0.0         # coding rows that carry the toolset
    thinking: float = 0.1
    image_share: float = 0.01       # non-vision rows with an image
    out_scale: float = 1.0
    rate_limited: float = 0.003
    error: float = 0.004
    ua: str = "sdk"
    # identity, payment, network
    network: dict[str, float] = field(default_factory=lambda: {"residential": 1.0})
    group_net: GroupNet | None = None
    group_share: float = 0.0        # rows sent from the group's addresses
    rotate: float = 0.0             # rows from a random group address, not the account's own
    p_fresh: float = 0.02           # rows from a fresh random address
    fresh_kind: str = "residential"
    email: dict[str, float] = field(default_factory=lambda: {"public": 1.0})
    verification: dict[str, float] = field(default_factory=lambda: {"standard": 1.0})
    shared_org: bool = False        # one org id and card per group (apps, resellers)
    card_share: float = 0.0         # accounts paying with one of the group's shared cards
    cards_per: int = 8              # accounts per shared card
    age_days: tuple[float, float] = (30.0, 900.0)
    waves: int = 0                  # > 0: created in sign-up waves (campaigns)
    infra: str | None = None        # populations with the same infra share group resources
    models: dict[str, float] = field(default_factory=lambda: dict(MODELS_BEFORE))
    adopt: float = 0.2              # final share of traffic on a newly released model
    adopt_hours: float = 120.0      # time constant of that move
    allowlisted: bool = False

    @property
    def attacker(self) -> bool:
        return self.operator is not None


def _mix(**w: float) -> dict[str, float]:
    total = sum(w.values())
    return {k: v / total for k, v in w.items()}


ORGANIC_MIX = _mix(coding=22, agentic_tool_use=4, reasoning_math=8, vision=5, grading_reward=3,
                   safety_sensitive=2, writing=20, knowledge_qa=20, chat_other=16)

POPULATIONS: dict[str, Population] = {p.name: p for p in (
    # ---------------- benign ----------------
    Population(
        "casual", ORGANIC_MIX, p_active=0.3, volume_sigma=1.1, churn=0.15,
        network={"residential": 0.78, "mobile": 0.1, "hosting": 0.07, "cloud": 0.05},
        p_fresh=0.03, fresh_kind="mobile",
        email={"public": 0.85, "company": 0.08, "edu_other": 0.07},
        verification={"standard": 0.93, "education": 0.05, "startup": 0.02},
        card_share=0.02, cards_per=2, ua="sdk"),
    Population(
        "solo_developer", _mix(coding=45, agentic_tool_use=8, reasoning_math=6, writing=12,
                               knowledge_qa=15, chat_other=6, vision=4, grading_reward=4),
        p_active=0.65, weekend=0.4, volume_sigma=1.0, turns=4.0, thinking=0.3, system="generic",
        system_share=0.4, tools="random", tool_share=0.2,
        network={"residential": 0.6, "cloud": 0.25, "hosting": 0.15}, p_fresh=0.05,
        fresh_kind="cloud", email={"public": 0.6, "company": 0.4},
        verification={"standard": 0.8, "startup": 0.15, "research": 0.05}, ua="sdk"),
    Population(
        "consumer_app", ORGANIC_MIX, p_active=1.0, weekend=1.1, volume_sigma=0.5, churn=0.0,
        profile="app", tz_from_group=True, turns=5.0, system="app", system_share=0.97,
        thinking=0.02, image_share=0.05, tools="random", rate_limited=0.02,
        network={"cloud": 1.0}, group_net=GroupNet("cloud", 1, 2, 3), group_share=0.95,
        p_fresh=0.0, email={"company": 1.0},
        verification={"startup": 0.5, "enterprise": 0.5}, shared_org=True, ua="app"),
    Population(
        "ide_agent", _mix(coding=70, agentic_tool_use=20, knowledge_qa=4, writing=3, vision=3),
        p_active=0.75, weekend=0.3, burst=True, volume_sigma=0.9, turns=14.0, tools="ide",
        tool_share=0.85, system="ide", system_share=0.95, thinking=0.35, out_scale=1.4,
        rate_limited=0.01, network={"residential": 0.5, "cloud": 0.35, "hosting": 0.15},
        p_fresh=0.04, fresh_kind="cloud", email={"public": 0.5, "company": 0.5},
        verification={"standard": 0.8, "startup": 0.2}, ua="ide"),
    Population(
        "enterprise_batch", {"knowledge_qa": 1.0}, style="batch", p_active=0.95, weekend=1.0,
        profile="night", volume_sigma=0.1, churn=0.0, out_scale=0.4, rate_limited=0.03,
        network={"cloud": 1.0}, group_net=GroupNet("cloud", 1, 1, 2), group_share=1.0,
        p_fresh=0.0, email={"company": 1.0}, verification={"enterprise": 1.0},
        shared_org=True, ua="script", models={"atlas-3-mini": 1.0}, adopt=0.0,
        age_days=(200.0, 700.0)),
    Population(
        "eval_harness", _mix(reasoning_math=50, knowledge_qa=40, coding=10), style="harness",
        p_active=0.3, weekend=0.6, burst=True, volume_sigma=0.4, churn=0.0, thinking=0.5,
        out_scale=1.6, rate_limited=0.02, network={"cloud": 0.7, "hosting": 0.3},
        group_net=GroupNet("cloud", 1, 1, 2), group_share=0.8, p_fresh=0.0,
        email={"company": 0.7, "edu_other": 0.3},
        verification={"research": 0.6, "enterprise": 0.2, "startup": 0.2}, shared_org=True,
        ua="script", adopt=0.45, adopt_hours=30.0),
    Population(
        "university_lab", _mix(coding=45, reasoning_math=25, knowledge_qa=20, writing=10),
        style="coursework", profile="class", tz_from_group=True, p_active=0.5, weekend=0.3,
        volume_sigma=0.7, churn=0.05, turns=2.5, network={"campus": 1.0},
        group_net=GroupNet("campus", 1, 1, 254), group_share=0.8, p_fresh=0.05,
        email={"campus": 1.0}, verification={"education": 0.9, "research": 0.1},
        card_share=0.3, cards_per=15, age_days=(20.0, 60.0), ua="sdk"),
    Population(
        "cgnat_mobile", ORGANIC_MIX, p_active=0.3, volume_sigma=0.9, churn=0.1,
        tz_from_group=True, network={"mobile": 1.0}, group_net=GroupNet("mobile", 1, 1, 3),
        group_share=0.9, p_fresh=0.02, fresh_kind="mobile", image_share=0.06,
        email={"public": 1.0}, ua="app"),
    Population(
        "synthetic_data_partner",
        _mix(reasoning_math=30, coding=25, grading_reward=15, knowledge_qa=15, writing=10,
             safety_sensitive=5),
        style="distill", breadth=0.35, allowlisted=True, profile="flat", p_active=0.95,
        weekend=1.0, volume_sigma=0.3, churn=0.0, thinking=0.6, out_scale=1.8,
        rate_limited=0.02, network={"cloud": 1.0}, group_net=GroupNet("cloud", 1, 2, 8),
        group_share=0.9, p_fresh=0.0, email={"company": 1.0}, verification={"enterprise": 1.0},
        shared_org=True, ua="script", adopt=0.5, adopt_hours=24.0, age_days=(300.0, 600.0)),
    Population(
        "reseller_customer", ORGANIC_MIX, infra="reseller", p_active=0.5, volume_sigma=0.9,
        churn=0.15, network={"cloud": 1.0}, group_net=GroupNet("cloud", 1, 1, 6),
        group_share=0.9, p_fresh=0.02, email={"public": 0.7, "company": 0.3},
        verification={"reseller": 1.0}, shared_org=True, ua="sdk", system="app",
        system_share=0.3, age_days=(10.0, 300.0)),
    # ---------------- attacking campaigns ----------------
    Population(
        "cot_reward_harvester",
        _mix(reasoning_math=50, grading_reward=25, safety_sensitive=15, knowledge_qa=10),
        operator="cot-harvester", style="distill", breadth=0.3, organic_share=0.05,
        profile="flat", p_active=0.85, weekend=1.0, volume_sigma=0.6, churn=0.2, thinking=0.55,
        out_scale=1.8, rate_limited=0.015,
        network={"hosting": 0.5, "residential": 0.35, "cloud": 0.15}, p_fresh=0.15,
        fresh_kind="hosting", email={"public": 0.75, "throwaway": 0.15, "edu_other": 0.1},
        verification={"standard": 0.85, "education": 0.1, "startup": 0.05}, card_share=0.35,
        cards_per=6, waves=4, age_days=(5.0, 60.0), ua="script", adopt=0.3, adopt_hours=48.0),
    Population(
        "agentic_hydra", _mix(agentic_tool_use=55, vision=30, coding=10, knowledge_qa=5),
        operator="hydra-harvester", style="distill", breadth=0.3, organic_share=0.05,
        profile="flat", burst=True, sync=True, p_active=0.9, weekend=1.0, volume_sigma=0.6,
        churn=0.2,
        tools="operator", turns=3.0, thinking=0.3, out_scale=1.3, rate_limited=0.015,
        network={"hosting": 0.6, "residential": 0.4}, group_net=GroupNet("hosting", 2, 8, 254),
        group_share=0.5, rotate=0.6, p_fresh=0.1, fresh_kind="residential",
        email={"public": 0.8, "throwaway": 0.2}, verification={"standard": 0.9, "startup": 0.1},
        card_share=0.4, cards_per=8, waves=6, age_days=(3.0, 45.0), ua="sdk", adopt=0.25),
    Population(
        "coding_harvester", _mix(coding=75, agentic_tool_use=20, reasoning_math=5),
        operator="coding-harvester", style="distill", breadth=0.25, organic_share=0.03,
        profile="flat", p_active=0.9, weekend=1.0, volume_sigma=0.5, churn=0.15, tools="ide",
        tool_share=0.6, turns=3.0, thinking=0.4, out_scale=1.6, rate_limited=0.02,
        system="ide", system_share=0.5, network={"cloud": 0.6, "hosting": 0.4}, p_fresh=0.1,
        fresh_kind="cloud", email={"public": 0.85, "throwaway": 0.1, "company": 0.05},
        verification={"standard": 0.8, "startup": 0.15, "education": 0.05}, card_share=0.3,
        cards_per=5, waves=3, age_days=(5.0, 40.0), ua="ide", adopt=0.5, adopt_hours=6.0),
    Population(
        "low_slow_evader",
        _mix(reasoning_math=25, coding=25, grading_reward=10, knowledge_qa=15, writing=15,
             safety_sensitive=10),
        operator="low-slow-evader", style="distill", breadth=0.9, organic_share=0.4,
        profile="human", p_active=0.55, weekend=0.6, volume_sigma=0.7, churn=0.1, turns=1.8,
        thinking=0.25, network={"residential": 0.9, "mobile": 0.1}, p_fresh=0.6,
        fresh_kind="residential", email={"public": 0.95, "edu_other": 0.05},
        verification={"standard": 0.92, "education": 0.05, "startup": 0.03},
        card_share=0.1, cards_per=4, age_days=(180.0, 900.0), ua="sdk", adopt=0.2),
    Population(
        "reseller_distiller",
        _mix(reasoning_math=30, coding=30, knowledge_qa=15, grading_reward=10, writing=15),
        operator="reseller-distiller", style="distill", breadth=0.4, organic_share=0.1,
        infra="reseller", profile="flat", p_active=0.85, weekend=1.0, volume_sigma=0.6,
        churn=0.1, thinking=0.4, out_scale=1.5, network={"cloud": 1.0},
        group_net=GroupNet("cloud", 1, 1, 6), group_share=0.9, p_fresh=0.02,
        email={"public": 0.7, "company": 0.3}, verification={"reseller": 1.0}, shared_org=True,
        ua="sdk", age_days=(10.0, 300.0), adopt=0.3),
)}
