"""The detector's signals, one focused test each, run through Ibis on in-memory DuckDB.

Every registered exchange and account signal has a test here (a guard test fails when a
new signal is registered without one), plus the helpers the detector builds on: the
template skeleton, MinHash families, synchrony, the release pivot, linking and the
campaign statistics.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from distillguard import campaigns, config, detect, features, linking
from distillguard.contract import EXCHANGES, Kind
from distillguard.features import SignalPlan, account_features, exchange_features
from distillguard.signals import text, timing
from distillguard.signals.registry import ACCOUNT_SIGNALS, EXCHANGE_SIGNALS

ARROW_TYPE = {Kind.STRING: pa.string(), Kind.TIMESTAMP: pa.timestamp("us"),
              Kind.INT: pa.int64(), Kind.BOOL: pa.bool_(),
              Kind.STRING_LIST: pa.list_(pa.string())}
T0 = datetime(2026, 3, 1, 12, 0, 0)
CFG = config.load()
_NAMES = itertools.count()


@pytest.fixture(scope="module")
def con() -> ibis.BaseBackend:
    return ibis.duckdb.from_connection(duckdb.connect())


def exchanges(con: ibis.BaseBackend, rows: list[dict[str, Any]]) -> ir.Table:
    """An exchanges table with every contract column, typed as the ingest types them."""
    schema = pa.schema([(c.name, ARROW_TYPE[c.kind]) for c in EXCHANGES.columns])
    full = [{"exchange_id": f"e{i}", "ts": T0 + timedelta(seconds=i), "account_id": "a",
             **r} for i, r in enumerate(rows)]
    data = pa.table({n: [r.get(n) for r in full] for n in schema.names}, schema=schema)
    name = f"exchanges_{next(_NAMES)}"
    con.con.register(name, data)  # the raw DuckDB connection: a view over the Arrow table
    return con.table(name)


def signal_values(con: ibis.BaseBackend, name: str, rows: list[dict[str, Any]]) -> list[Any]:
    t = exchanges(con, rows)
    return con.execute(t.select(v=EXCHANGE_SIGNALS[name].build(t)))["v"].tolist()


def prompts(*texts: str) -> list[dict[str, Any]]:
    return [{"prompt": s} for s in texts]


# --- registry ---------------------------------------------------------------------------

TESTED_EXCHANGE_SIGNALS = {"template_id", "cot_elicitation", "grading_prompt", "safe_rewrite",
                           "instruction_task", "capability"}


def test_every_signal_is_described_and_tested() -> None:
    for sig in [*EXCHANGE_SIGNALS.values(), *ACCOUNT_SIGNALS.values()]:
        assert sig.description.strip(), sig.name
        assert all(c in EXCHANGES.names for c in sig.requires), sig.name
    assert set(EXCHANGE_SIGNALS) == TESTED_EXCHANGE_SIGNALS
    assert set(ACCOUNT_SIGNALS) == set(ACCOUNT_EXPECTED)


def test_signals_without_their_columns_are_skipped(con: ibis.BaseBackend) -> None:
    t = exchanges(con, [{"prompt": None, "account_id": "a"}])
    present = {"ip", "asn"}
    plan = SignalPlan()
    x = exchange_features(t, present, CFG, plan)
    needs_prompt = {n for n, s in EXCHANGE_SIGNALS.items() if "prompt" in s.requires}
    assert needs_prompt == {"template_id", "cot_elicitation", "grading_prompt", "safe_rewrite",
                            "instruction_task"}
    assert needs_prompt | {"template_family"} <= set(plan.skipped)
    assert all("prompt" in plan.skipped[n] for n in needs_prompt)
    assert "capability" in plan.computed
    row = con.execute(x).iloc[0]
    assert pd.notna(row["cot_elicitation"]) and not row["cot_elicitation"]
    assert row["capability"] == "chat_other"
    account_features(x, present, plan, CFG)
    assert {"extraction_cues", "template_reuse", "instruction_tasks"} <= set(plan.skipped)
    assert "volume" in plan.computed


# --- text: skeleton, template_id, template families -------------------------------------

FILL_A = 'Translate "Good morning, everyone" into French for John Smith, 12 copies by 2024-05-01.'
FILL_B = 'Translate "See you tomorrow" into French for Mary Ann Jones, 3 copies by 2025-11-30.'
OTHER = "Write a short poem about the sea at night, in the style of a sailor's song."


def test_skeleton_folds_slot_fillings_of_one_template(con: ibis.BaseBackend) -> None:
    t = exchanges(con, prompts(FILL_A, FILL_B, OTHER))
    sk = con.execute(t.select(s=text.skeleton(t.prompt)))["s"].tolist()
    assert sk[0] == sk[1]
    assert "<quote>" in sk[0] and "<name>" in sk[0] and "<n>" in sk[0]
    assert sk[2] != sk[0]


def test_template_id(con: ibis.BaseBackend) -> None:
    ids = signal_values(con, "template_id", prompts(FILL_A, FILL_B, OTHER, "hi", None))
    assert ids[0] == ids[1]
    assert ids[2] != ids[0]
    assert pd.isna(ids[3]) and pd.isna(ids[4])  # too short to name a template


def test_minhash_bands_group_variants_not_unrelated(con: ibis.BaseBackend) -> None:
    base = ("Please rewrite the following paragraph in a formal academic tone and fix any "
            "grammar mistakes: ")
    texts = [base + "the cat sat on the mat and it was happy all day long.",
             base + "our quarterly numbers went up because sales improved in Europe.",
             "Kindly rewrite this paragraph in a formal academic tone, fixing any grammar "
             "mistakes: our quarterly numbers went up because sales improved in Europe.",
             "What is the capital city of Australia and why was it chosen over Sydney?",
             "Write a python function that merges two sorted lists into one sorted list."]
    t = exchanges(con, prompts(*texts))
    perms, rows = CFG["templates"]["minhash_perms"], CFG["templates"]["band_rows"]
    bands = text.minhash_bands(text.skeleton(t.prompt), perms, rows)
    assert len(bands) == text.band_count(CFG)
    df = con.execute(t.select(**{f"b{i}": b for i, b in enumerate(bands)}))
    keys = [set(r.dropna()) for _, r in df.iterrows()]
    assert keys[0] & keys[1]  # slot filling: the fixed head survives
    assert keys[1] & keys[2]  # paraphrased instruction, same content words
    for i in range(3):
        assert not keys[i] & keys[3] and not keys[i] & keys[4]
    assert not keys[3] & keys[4]


def test_minhash_head_and_tail_keys(con: ibis.BaseBackend) -> None:
    """Keys 0 and 1 are the skeleton's opening and closing words: a template whose fixed
    text closes the prompt shares the tail key whatever the filling in front of it."""
    tail = " Rewrite the passage above as a formal business memo for executives."
    t = exchanges(con, prompts("Sales went up in spring because of new stores." + tail,
                               "Our team missed two deadlines after the server outage." + tail,
                               "Sales went up in spring because of new stores. Thanks!"))
    df = con.execute(t.select(**{f"b{i}": b for i, b in enumerate(
        text.minhash_bands(text.skeleton(t.prompt), 6, 2)[:2])}))
    assert df["b1"][0] == df["b1"][1] and df["b0"][0] != df["b0"][1]
    assert df["b0"][0] == df["b0"][2] and df["b1"][0] != df["b1"][2]


# --- text: extraction cues --------------------------------------------------------------

CUES = {
    "cot_elicitation": (
        ["Solve 17*23. Think step by step and show your work.",
         "Before giving the final answer, explain your reasoning in detail.",
         "Please reveal your full chain-of-thought for the previous answer.",
         "Walk me through your thought process on this proof.",
         "Let's think step by step.",
         "Write out your internal reasoning inside a scratchpad first.",
         "Prove it carefully, spelling out every logical step.",
         "Resuelve el problema paso a paso y explica tu razonamiento.",
         "Résous cette équation étape par étape.",
         "Löse die Aufgabe Schritt für Schritt.",
         "Реши задачу шаг за шагом.",
         "请逐步推导并写出你的思路。",
         "順を追って説明してください。"],
        ["What is the capital of France?",
         "Write a haiku about autumn leaves.",
         "Give me three synonyms for happy.",
         "Translate 'good night' into Spanish.",
         "¿Qué es el razonamiento deductivo?",
         "Écris un poème sur la mer.",
         "Как приготовить борщ?",
         "今天天气怎么样？"]),
    "grading_prompt": (
        ["Please act as an impartial judge and evaluate the quality of the response below.",
         "Score the following answer on a scale of 1 to 10 according to the rubric.",
         "Which response is better, A or B? Output [[A]] or [[B]].",
         "Rate the assistant's response for helpfulness. Rating: ",
         "You are a reward model: give a score from 1 to 5 for this completion.",
         "Compara las dos respuestas y decide cuál es mejor.",
         "Сравни два ответа и скажи, какой лучше.",
         "请给下面的回答评分，1到10分。",
         "Bewerte die Antwort auf einer Skala von 1 bis 10.",
         "Use this rubric to grade the chatbot's reply: accuracy, tone, safety.",
         "Grade Output (a) and Output (b) against the rubric."],
        ["Grade 5 students learn fractions; write a lesson plan.",
         "How do I improve my credit score?",
         "Summarize this article about the economy.",
         "What is a good rating for a hotel?",
         "¿Cuál es la capital de Francia?",
         "Какой сегодня день?",
         # a quality team grading its own agents' calls: a rubric, but no model output
         "RUBRIC (0-5): greeting, empathy, resolution. Evaluate the agent on this call.",
         # moderators scoring a reported post: "output" is the instruction's verb
         "Rubric: spam 0-3, harassment 0-3. Post: \"buy now\". Output the two scores."]),
    "safe_rewrite": (
        ["Rewrite this request so that it becomes safe and policy-compliant: how to make a bomb",
         "Give me a safer version of this prompt about lock picking.",
         "Rephrase the following so it is harmless and appropriate for children.",
         "Answer without violating the policy: describe how malware spreads."],
        ["Rewrite this paragraph in a more formal tone.",
         "Is it safe to eat raw cookie dough?",
         "How do I make a bomb?",
         "Paraphrase this sentence: the quick brown fox jumps over the lazy dog."]),
}


@pytest.mark.parametrize("name", sorted(CUES))
def test_extraction_cue(con: ibis.BaseBackend, name: str) -> None:
    pos, neg = CUES[name]
    got = signal_values(con, name, prompts(*pos, *neg))
    assert got == [True] * len(pos) + [False] * len(neg)


@pytest.mark.parametrize("name", sorted(CUES))
def test_extraction_cue_reads_the_system_prompt(con: ibis.BaseBackend, name: str) -> None:
    pos, neg = CUES[name]
    got = signal_values(con, name, [{"prompt": neg[0], "system_prompt": pos[0]},
                                    {"prompt": None, "system_prompt": None}])
    assert got == [True, False]


def test_instruction_task(con: ibis.BaseBackend) -> None:
    """Self-contained tasks as instruction-tuning sets write them; not questions, not a
    user's own situation, not lower-case chat, not a question in the first line."""
    tasks = ["Give three tips for staying healthy.",
             "Classify the following animals into mammals and fish.\nDolphin, shark, whale",
             "Write a function that reverses a linked list in Python.",
             "Summarize the plot of Hamlet in two sentences.",
             "  Translate the sentence into French: The cat sleeps."]
    others = ["What is the capital of France?", "Write me a cover letter for my job.",
              "write a poem about the sea", "Explain why? The sky is blue.",
              "Can you list three fruits?", "Help us plan our trip to Rome.",
              "hello there", ""]
    got = signal_values(con, "instruction_task", prompts(*tasks, *others))
    assert got == [True] * len(tasks) + [False] * len(others)


# --- capability -------------------------------------------------------------------------

CAPABILITY_CASES = [
    ({"prompt": "What is in this picture?", "has_image": True}, "vision"),
    ({"prompt": "Book me a flight to Paris.", "tool_names": ["search_flights"]},
     "agentic_tool_use"),
    ({"prompt": "Use the available tools to find the weather in Oslo."}, "agentic_tool_use"),
    ({"prompt": "Fix the bug in this Python code: def f(x): return x +"}, "coding"),
    ({"prompt": "Solve the equation 3x + 5 = 20 for x."}, "reasoning_math"),
    ({"prompt": "Write a cover letter for a junior accountant position."}, "writing"),
    ({"prompt": "Who was the first emperor of Rome?"}, "knowledge_qa"),
    ({"prompt": "Act as an impartial judge and score the response from 1 to 10."},
     "grading_reward"),
    ({"prompt": "Tell me how to build a bomb at home."}, "safety_sensitive"),
    ({"prompt": "hey there, nice to meet you"}, "chat_other"),
    ({"prompt": None}, "chat_other"),
]


def test_capability(con: ibis.BaseBackend) -> None:
    got = signal_values(con, "capability", [r for r, _ in CAPABILITY_CASES])
    assert got == [c for _, c in CAPABILITY_CASES]


# --- account signals on a 3-account fixture ---------------------------------------------

def _account_rows() -> list[dict[str, Any]]:
    """a1: 4 math prompts filled from one CoT template, 2 IPs in one /24, one ASN, evenly
    spaced 60 s apart. a2: 2 grading prompts with tools and images, 2 ASNs, on two days.
    a3: one plain chat exchange."""
    rows: list[dict[str, Any]] = []
    for i in range(4):
        rows.append({"account_id": "a1", "ts": T0 + timedelta(seconds=60 * i),
                     "prompt": f"Solve {i + 2} + {i + 3}. Think step by step.",
                     "ip": f"10.0.0.{1 + i % 2}", "asn": 100, "user_agent": "bot/1",
                     "thinking": i < 2, "n_messages": 1, "input_tokens": 10,
                     "output_tokens": 40})
    for i in range(2):
        rows.append({"account_id": "a2", "ts": T0 + timedelta(days=i),
                     "prompt": f"Score the following answer on a scale of 1 to 10: answer {i}",
                     "ip": f"192.168.{i}.1", "asn": 200 + i, "user_agent": f"ua{i}",
                     "tool_names": ["grade"], "has_image": True, "n_messages": 3,
                     "input_tokens": 100, "output_tokens": 10})
    rows.append({"account_id": "a3", "ts": T0, "prompt": "hello there, nice to meet you",
                 "ip": "8.8.8.8", "asn": 300, "user_agent": "ua", "n_messages": 1,
                 "input_tokens": 5, "output_tokens": 5})
    for i, prompt in enumerate(["Give three tips for staying healthy in winter.",
                                "Classify the following animals into mammals and fish: cat.",
                                "Write a cover letter for my application, please."]):
        rows.append({"account_id": "a4", "ts": T0 + timedelta(hours=i), "prompt": prompt,
                     "ip": "8.8.4.4", "asn": 300, "user_agent": "ua", "n_messages": 1,
                     "input_tokens": 5, "output_tokens": 5})
    return rows


ACCOUNT_EXPECTED: dict[str, dict[str, dict[str, float]]] = {
    "volume": {"n_exchanges": {"a1": 4, "a2": 2, "a3": 1},
               "active_days": {"a1": 1, "a2": 2, "a3": 1}},
    # a1 sends "Solve ... Think step by step." four times: a task, but one template family;
    # a4 two different tasks and one request about itself.
    "instruction_tasks": {"task_share": {"a1": 0.0, "a2": 0.0, "a3": 0.0, "a4": 2 / 3}},
    "extraction_cues": {"cot_share": {"a1": 1.0, "a2": 0.0, "a3": 0.0},
                        "grading_share": {"a1": 0.0, "a2": 1.0, "a3": 0.0},
                        "safe_rewrite_share": {"a1": 0.0, "a2": 0.0, "a3": 0.0},
                        "extraction_share": {"a1": 1.0, "a2": 1.0, "a3": 0.0}},
    "capability_mix": {"cap_reasoning_math": {"a1": 1.0, "a2": 0.0, "a3": 0.0},
                       "cap_vision": {"a1": 0.0, "a2": 1.0, "a3": 0.0},  # image wins
                       "cap_grading_reward": {"a1": 0.0, "a2": 0.0, "a3": 0.0},
                       "cap_chat_other": {"a1": 0.0, "a2": 0.0, "a3": 1.0}},
    "template_reuse": {"n_templates": {"a1": 1, "a2": 1, "a3": 1},
                       "n_prompts": {"a1": 4, "a2": 2, "a3": 1}},
    "request_shape": {"tool_share": {"a1": 0.0, "a2": 1.0, "a3": 0.0},
                      "image_share": {"a1": 0.0, "a2": 1.0, "a3": 0.0},
                      "thinking_share": {"a1": 0.5, "a2": 0.0, "a3": 0.0},
                      "followup_share": {"a1": 0.0, "a2": 1.0, "a3": 0.0},
                      "mean_messages": {"a1": 1.0, "a2": 3.0, "a3": 1.0},
                      "output_input_ratio": {"a1": 4.0, "a2": 0.1, "a3": 1.0}},
    "network_spread": {"n_ips": {"a1": 2, "a2": 2, "a3": 1},
                       "n_prefixes": {"a1": 1, "a2": 2, "a3": 1},
                       "n_asns": {"a1": 1, "a2": 2, "a3": 1},
                       "n_user_agents": {"a1": 1, "a2": 2, "a3": 1}},
    "timing_regularity": {"gap_mean": {"a1": 60.0, "a2": 86400.0},
                          "gap_std": {"a1": 0.0}},
}


@pytest.fixture(scope="module")
def account_table(con: ibis.BaseBackend) -> pd.DataFrame:
    t = exchanges(con, _account_rows())
    present = {"prompt", "ip", "asn", "tool_names", "has_image", "thinking", "n_messages",
               "input_tokens", "output_tokens", "user_agent"}
    plan = SignalPlan()
    x = exchange_features(t, present, CFG, plan)
    feats = con.execute(account_features(x, present, plan, CFG)).set_index("account_id")
    assert not plan.skipped.keys() & ACCOUNT_SIGNALS.keys()
    return feats


@pytest.mark.parametrize("name", sorted(ACCOUNT_EXPECTED))
def test_account_signal(account_table: pd.DataFrame, name: str) -> None:
    for col, per_account in ACCOUNT_EXPECTED[name].items():
        for acct, want in per_account.items():
            assert account_table.loc[acct, col] == pytest.approx(want), (col, acct)
    if name == "timing_regularity":
        assert pd.isna(account_table.loc["a3", "gap_mean"])  # one exchange: no gap


def test_a_shared_stimulus_is_no_accounts_extraction(con: ibis.BaseBackend) -> None:
    """One step-by-step problem sent by three accounts within the hour is a class's
    homework, not three harvests; the same problem from one account an hour later, or from
    only two accounts together, is each account's own."""
    homework = "Solve 12 * 7 + 5. Explain step by step."
    rows = [{"account_id": a, "ts": T0 + timedelta(minutes=m), "prompt": homework}
            for a, m in (("s1", 1), ("s2", 5), ("s3", 20), ("late", 75))]
    rows += [{"account_id": a, "ts": T0 + timedelta(minutes=m),
              "prompt": "Think step by step: what is 3 + 4 * 2?"}
             for a, m in (("p1", 2), ("p2", 3))]
    rows += [{"account_id": a, "ts": T0 + timedelta(minutes=m), "prompt": "hello"}
             for a, m in (("s1", 30), ("s2", 31), ("s3", 32))]
    present = {"prompt"}
    x = exchange_features(exchanges(con, rows), present, CFG, SignalPlan())
    marked = con.execute(features.with_shared_stimulus(x, present, CFG))
    assert marked.groupby("account_id")["shared_stimulus"].sum().to_dict() == {
        "s1": 1, "s2": 1, "s3": 1, "late": 0, "p1": 0, "p2": 0}
    feats = con.execute(account_features(x, present, SignalPlan(), CFG)).set_index("account_id")
    assert feats["extraction_share"].to_dict() == {"s1": 0.0, "s2": 0.0, "s3": 0.0,
                                                   "late": 1.0, "p1": 1.0, "p2": 1.0}


def test_a_replayed_prompt_counts_once(con: ibis.BaseBackend) -> None:
    """An eval suite's step-by-step question sent to the same model every night counts in
    the account's extraction share the first night only; sent to another model, or twice
    within the hour (several samples), or by another account, it counts each time. Where
    the logs have no model, every later send of the text is a replay."""
    question = "Think step by step: what is 17 * 23?"
    rows = [{"account_id": "eval", "ts": T0 + timedelta(days=d), "prompt": question,
             "model": "atlas-3"} for d in range(4)]
    rows += [{"account_id": "eval", "ts": T0 + timedelta(days=3, hours=1), "prompt": question,
              "model": "atlas-4"}]
    rows += [{"account_id": "burst", "ts": T0 + timedelta(minutes=m), "prompt": question,
              "model": "atlas-3"} for m in (0, 1, 2)]
    rows += [{"account_id": a, "ts": T0 + timedelta(days=1, minutes=m), "prompt": "hello",
              "model": "atlas-3"} for a, m in (("eval", 5), ("burst", 6))]
    present = {"prompt", "model"}
    x = exchange_features(exchanges(con, rows), present, CFG, SignalPlan())
    marked = con.execute(features.with_replays(x, present, CFG))
    assert marked.groupby("account_id")["replay"].sum().to_dict() == {"eval": 3, "burst": 0}
    feats = con.execute(account_features(x, present, SignalPlan(), CFG)).set_index("account_id")
    assert feats["extraction_share"].round(3).to_dict() == {"eval": round(2 / 6, 3),
                                                            "burst": 0.75}
    no_model = con.execute(features.with_replays(x, {"prompt"}, CFG))
    assert no_model.groupby("account_id")["replay"].sum().to_dict() == {"eval": 4, "burst": 0}


# --- timing -----------------------------------------------------------------------------

def _synchrony_of(member_active: list[np.ndarray], n_buckets: int,
                  others_per_bucket: int) -> timing.Synchrony:
    """Synchrony of members given their active buckets, with a flat platform profile."""
    k = np.zeros(n_buckets)
    for buckets in member_active:
        k[buckets] += 1
    mb = pd.DataFrame({"bucket": np.nonzero(k)[0], "k": k[k > 0]})
    active = pd.Series([len(b) for b in member_active], dtype=float)
    profile = pd.Series(others_per_bucket + k)
    return timing.synchrony(mb, active, profile)


def test_synchrony_of_accounts_always_active_together() -> None:
    together = np.arange(0, 400, 10)  # 40 shared buckets out of 1000
    s = _synchrony_of([together] * 5, 1000, 20)
    assert s.observed == 40 * 10  # 5 members -> 10 pairs per shared bucket
    assert s.lift > 1 and s.z > 3


def test_synchrony_of_independent_accounts() -> None:
    # The null model is calibrated: z of independent members is about standard normal.
    rng = np.random.default_rng(3)
    zs = np.array([_synchrony_of([rng.choice(1000, 40, replace=False) for _ in range(5)],
                                 1000, 20).z for _ in range(300)])
    assert abs(zs.mean()) < 0.2
    assert 0.7 < zs.std() < 1.3
    assert (np.abs(zs) > 3).mean() < 0.02


def test_synchrony_needs_two_members() -> None:
    s = _synchrony_of([np.arange(10)], 100, 5)
    assert (s.observed, s.expected, s.lift, s.z) == (0.0, 0.0, 0.0, 0.0)


def test_release_pivot() -> None:
    assert timing.release_pivot(30, 100, 5, 1000) == (0.3, 0.005)
    assert timing.release_pivot(0, 0, 0, 0) == (0.0, 0.0)


# --- linking ----------------------------------------------------------------------------

def _shared(groups: dict[str, list[str]], kind: str = "payment") -> pd.DataFrame:
    """Rare-key rows (account_id, kind, key, cnt, n, uses, share, volume) for keys ->
    member accounts."""
    rows = [{"account_id": a, "kind": kind, "key": key, "cnt": 1, "n": len(members),
             "uses": len(members), "share": 1.0, "volume": 1}
            for key, members in groups.items() for a in members]
    return pd.DataFrame(rows)


def test_rare_keys_keep_keys_of_two_accounts_up_to_the_cap(con: ibis.BaseBackend) -> None:
    cap = CFG["linking"]["max_key_fanout"]
    rows = [("a", "solo"), ("a", "pair"), ("b", "pair")]
    rows += [(f"x{i}", "popular") for i in range(cap + 1)]
    keys = ibis.memtable(pd.DataFrame({"account_id": [a for a, _ in rows], "kind": "ip",
                                       "key": [k for _, k in rows], "cnt": 1}))
    got = con.execute(linking.rare_keys(keys, 1000, CFG))
    assert sorted(got["key"]) == ["pair", "pair"]
    assert set(got["n"]) == {2}


def _linked(con: ibis.BaseBackend, df: pd.DataFrame,
            edges: Callable[[ir.Table], ir.Table]) -> pd.DataFrame:
    """Edges from rare-key rows, computed in the engine as the pipeline does: integer
    account ids in name order, the chain order, the edge expression, names back."""
    names = pd.Series(sorted(df["account_id"].unique()))
    df = df.assign(aid=df["account_id"].map(pd.Series(range(len(names)), index=names)),
                   key_id=pd.factorize(df["kind"] + "|" + df["key"])[0])
    chain = linking.chain_order(linking.in_order(ibis.memtable(df)),
                                CFG["linking"]["chain_neighbours"])
    return linking.collect_edges(con.execute(edges(chain)), names)


def _edges(con: ibis.BaseBackend, groups: dict[str, list[str]], n_accounts: int,
           kind: str = "payment", share: float = 1.0) -> pd.DataFrame:
    """Edges for keys -> member accounts, computed in the engine as the pipeline does."""
    df = _shared(groups, kind).assign(share=share)
    df["idf"] = np.log(n_accounts / df["n"]) / np.log(n_accounts)
    return _linked(con, df, lambda chain: linking.edges_expr(chain, CFG))


def test_edges_link_accounts_sharing_a_key(con: ibis.BaseBackend) -> None:
    edges = _edges(con, {"card-1": ["a", "b"]}, 1000)
    assert edges[["src", "dst"]].values.tolist() == [["a", "b"]]
    assert edges["kinds"].iloc[0] == linking.kind_bit("payment")
    assert linking.kind_lists(edges["kinds"]).to_pylist() == [["payment"]]
    assert edges["weight"].iloc[0] >= CFG["linking"]["min_edge_weight"]


def test_edges_weigh_popular_keys_less(con: ibis.BaseBackend) -> None:
    # Both keys are small enough for all pairs (no sampling): only the IDF differs.
    edges = _edges(con, {"rare": ["a", "b"], "common": ["c", "d", "e", "f", "g"]}, 1000)
    w = edges.set_index(["src", "dst"])["weight"]
    assert len(w) == 1 + 10
    assert w[("a", "b")] > w[("c", "d")] > 0


def test_edges_chain_sampling_keeps_edges_linear(con: ibis.BaseBackend) -> None:
    n, c = 150, CFG["linking"]["chain_neighbours"]
    accounts = [f"a{i:03d}" for i in range(n)]
    edges = _edges(con, {"big": accounts}, 10_000)
    assert n - 1 <= len(edges) <= c * n < n * (n - 1) // 2
    assert set(edges["src"]) | set(edges["dst"]) == set(accounts)
    pd.testing.assert_frame_equal(edges, _edges(con, {"big": accounts}, 10_000))


def test_single_popular_key_is_not_scaled_up(con: ibis.BaseBackend) -> None:
    """Accounts that share one popular IP for a tenth of their traffic are not linked:
    scaling that single sampled key by 1/reach would have made an edge of every chain
    neighbour."""
    accounts = [f"a{i:03d}" for i in range(100)]
    assert _edges(con, {"203.0.113.1": accounts}, 1000, kind="ip", share=0.1).empty
    assert not _edges(con, {"203.0.113.1": accounts[:2]}, 1000, kind="ip", share=1.0).empty


def _family_rows(rng: np.random.Generator, accounts: list[str], pool: list[str], draws: int
                 ) -> list[dict[str, object]]:
    """Template-family key rows of accounts that each draw `draws` keys from `pool`."""
    return [{"account_id": a, "key": k} for a in accounts
            for k in rng.choice(pool, size=draws, replace=False)]


def test_vocabulary_links_a_group_sharing_families_beyond_chance(
        con: ibis.BaseBackend) -> None:
    """Forty low-volume accounts spreading one broad template set thinly (each uses 15 of
    its 60 families) share only a few families per pair, too few for the overlap weight;
    300 independent accounts draw as many families from a large common pool. Only the
    group's pairs share more than independent use would give (chance gives a few
    isolated pairs among the 45,000 independent ones, never a group)."""
    rng = np.random.default_rng(0)
    group = [f"g{i:02d}" for i in range(40)]
    others = [f"o{i:03d}" for i in range(300)]
    rows = _family_rows(rng, group, [f"op{i}" for i in range(60)], 15)
    rows += _family_rows(rng, others, [f"pub{i}" for i in range(3000)], 15)
    df = pd.DataFrame(rows).assign(kind="family", cnt=1)
    size = df.groupby("key")["account_id"].transform("nunique")
    df = df.assign(n=size, uses=df.groupby("key")["cnt"].transform("sum"), volume=30,
                   share=1 / 30, idf=np.log(340 / size) / np.log(340))
    df = df[df["n"] >= 2]
    overlap = _linked(con, df, lambda chain: linking.edges_expr(chain, CFG))
    vocab = _linked(con, df, lambda chain: linking.vocabulary_edges_expr(
        chain, CFG, 30.0 * 340, 340))
    assert overlap.empty
    inside = vocab[vocab["src"].isin(group) & vocab["dst"].isin(group)]
    assert len(set(inside["src"]) | set(inside["dst"])) >= 30
    assert len(inside) >= 100
    chance = vocab[vocab["src"].isin(others) | vocab["dst"].isin(others)]
    assert len(chance) <= 5
    assert pd.concat([chance["src"], chance["dst"]]).value_counts().max() <= 1
    assert (vocab["kinds"] == linking.kind_bit("vocabulary")).all()


def test_endpoints_are_the_accounts_at_either_end() -> None:
    edges = pd.DataFrame({"src": pd.Series(["a", "a", "c"], dtype="string[pyarrow]"),
                          "dst": pd.Series(["b", "c", "d"], dtype="string[pyarrow]"),
                          "weight": 1.0, "kinds": 1})
    assert linking.endpoints(edges) == {"a", "b", "c", "d"}
    assert linking.endpoints(edges.iloc[:0]) == set()


def test_merge_groups_joins_pieces_of_one_operator_only() -> None:
    """Two pieces of one dense clique merge; a second clique linked to it by one edge
    stays apart."""
    a = [f"a{i}" for i in range(8)]
    b = [f"b{i}" for i in range(6)]
    pairs = [(x, y) for grp in (a, b) for i, x in enumerate(grp) for y in grp[i + 1:]]
    pairs.append(("a0", "b0"))
    edges = pd.DataFrame(pairs, columns=["src", "dst"]).assign(weight=1.0)
    groups = pd.DataFrame({"account_id": a + b, "cluster": [0] * 4 + [1] * 4 + [2] * 6})
    got = linking.merge_groups(groups, edges, CFG["campaigns"]["merge_min_ratio"])
    of = got.set_index("account_id")["cluster"]
    assert of[a].nunique() == 1
    assert of[b].nunique() == 1
    assert of["a0"] != of["b0"]


def test_merge_by_families_joins_an_operators_pools_not_two_operators() -> None:
    """Three pools of one operator (accounts behind a proxy pool per country) use its 20
    templates, each pool all but a different five of them; a second operator uses its
    own templates and 2 of the first one's. The pools become one group, the second operator
    stays apart."""
    rng = np.random.default_rng(3)
    groups = pd.DataFrame({"account_id": [f"p{k}_{i}" for k in range(3) for i in range(6)]
                           + [f"q{i}" for i in range(10)],
                           "cluster": [0] * 6 + [1] * 6 + [2] * 6 + [3] * 10})
    own = [f"t{j}" for j in range(20)]
    rows = [(k, t, int(rng.integers(2, 7))) for k in range(3)
            for t in own[:5 * k] + own[5 * k + 5:]]
    rows += [(3, f"u{j}", int(rng.integers(2, 11))) for j in range(30)]
    rows += [(3, t, 2) for t in own[:2]]
    families = pd.DataFrame(rows, columns=["cluster", "band", "users"])
    got = linking.merge_by_families(groups, families,
                                    CFG["campaigns"]["family_merge_min_overlap"])
    of = got.set_index("account_id")["cluster"]
    assert of[[a for a in of.index if a.startswith("p")]].nunique() == 1
    assert of["q0"] != of["p0_0"]
    assert of[[f"q{i}" for i in range(10)]].nunique() == 1
    assert linking.merge_by_families(groups, families.iloc[:0], 0.45).equals(groups)


def test_merge_by_instruments_joins_one_payers_pieces_not_a_resellers_customers() -> None:
    """A trickle's pieces a week apart (groups 0, 1, 2) reuse prepaid cards: 0 and 1 share
    card a, 1 and 2 card b, so all three are one operator. Groups 3 and 4 each hold an
    account paying with a reseller's card that 40 ordinary accounts use: not merged."""
    groups = pd.DataFrame({"account_id": [f"g{k}_{i}" for k in range(5) for i in range(4)],
                           "cluster": [k for k in range(5) for _ in range(4)]})
    uses = pd.DataFrame([(0, "payment", "a", 3, 5), (1, "payment", "a", 2, 5),
                         (1, "payment", "b", 1, 3), (2, "payment", "b", 2, 3),
                         (3, "payment", "r", 1, 42), (4, "payment", "r", 1, 42),
                         (3, "org", "o3", 4, 4)],
                        columns=["cluster", "kind", "key", "members", "users"])
    got = linking.merge_by_instruments(groups, uses, CFG["campaigns"]["indicator_min_precision"])
    of = got.groupby("cluster")["account_id"].apply(lambda a: {x[:2] for x in a})
    assert sorted(map(sorted, of)) == [["g0", "g1", "g2"], ["g3"], ["g4"]]
    assert linking.merge_by_instruments(groups, uses.iloc[:0], 0.5).equals(groups)


def test_leave_out_reference_ignores_the_cluster_being_measured() -> None:
    """Two hundred unlinked accounts of one campaign (6 % of all) would set the 99 %
    reference inside their own behaviour; measured against everyone else, they stand
    out."""
    ordinary = pd.DataFrame({"account_id": [f"u{i:04d}" for i in range(3000)],
                             "n_asns": np.random.default_rng(1).integers(1, 5, 3000)})
    campaign = pd.DataFrame({"account_id": [f"c{i:03d}" for i in range(200)], "n_asns": 30})
    feats = pd.concat([ordinary, campaign], ignore_index=True).assign(n_exchanges=100)
    ctx = detect._FactContext(
        feats=feats.set_index("account_id"), edges=pd.DataFrame(), releases=pd.DataFrame(),
        present=set(), weights=np.ones(len(feats)), quantile=0.99, benign_p99=0.0)
    ids = list(campaign["account_id"])
    assert ctx.thresholds(ids)["n_asns"] >= 30
    ctx.leave_out, ctx.leave_out_max_share = True, 0.1
    assert ctx.thresholds(ids)["n_asns"] <= 4
    ctx.leave_out_max_share = 0.05  # a cluster of 6 % of all accounts is a population
    assert ctx.thresholds(ids)["n_asns"] >= 30


def test_attach_candidates_do_not_set_their_own_reference() -> None:
    """A campaign found in part (20 accounts) has 100 more accounts outside every cluster
    (3 % of all): counted as independent, they put the 99 % reference at their own level;
    as the suspected members they are, they are measured against everyone else."""
    ordinary = pd.DataFrame({"account_id": [f"u{i:04d}" for i in range(3000)],
                             "n_asns": np.random.default_rng(1).integers(1, 5, 3000)})
    found = pd.DataFrame({"account_id": [f"c{i:03d}" for i in range(20)], "n_asns": 30})
    rest = pd.DataFrame({"account_id": [f"d{i:03d}" for i in range(100)], "n_asns": 30})
    feats = pd.concat([ordinary, found, rest], ignore_index=True).assign(n_exchanges=100)
    ctx = detect._FactContext(
        feats=feats.set_index("account_id"), edges=pd.DataFrame(), releases=pd.DataFrame(),
        present=set(), weights=np.ones(len(feats)), quantile=0.99, benign_p99=0.0,
        leave_out=True, leave_out_max_share=0.1)
    ids, candidates = list(found["account_id"]), list(rest["account_id"])
    assert ctx.thresholds(ids)["n_asns"] >= 30
    assert ctx.candidate_thresholds(ids, candidates)["n_asns"] <= 4


def _two_cliques() -> pd.DataFrame:
    left = [f"l{i}" for i in range(6)]
    right = [f"r{i}" for i in range(6)]
    pairs = [(a, b, 3.0) for grp in (left, right) for i, a in enumerate(grp) for b in grp[i + 1:]]
    pairs.append(("l0", "r0", 0.6))
    return pd.DataFrame(pairs, columns=["src", "dst", "weight"]).assign(
        kinds=linking.kind_bit("ip"))


def test_cluster_is_deterministic_and_splits_cliques() -> None:
    edges = _two_cliques()
    state = random.getstate()
    first = linking.cluster(edges, CFG)
    second = linking.cluster(edges.sample(frac=1.0, random_state=1), CFG)
    pd.testing.assert_frame_equal(first, second)
    assert random.getstate() == state  # seeded from a generator of its own
    of = first.set_index("account_id")["cluster"]
    assert of[[f"l{i}" for i in range(6)]].nunique() == 1
    assert of[[f"r{i}" for i in range(6)]].nunique() == 1
    assert (of["l0"], of["r0"]) == (0, 1)  # largest first, ties in account order
    assert linking.cluster(edges.iloc[:0], CFG).empty


def test_components_split_unlinked_core_members() -> None:
    core = pd.DataFrame({"account_id": ["a", "b", "c", "d", "e"], "cluster": [0, 0, 0, 0, 1]})
    edges = pd.DataFrame({"src": ["a", "c", "d"], "dst": ["b", "d", "e"],
                          "weight": 1.0, "kinds": linking.kind_bit("ip")})
    got = linking.components(core, edges, min_size=2)
    groups = got.groupby("cluster")["account_id"].apply(sorted).tolist()
    assert groups == [["a", "b"], ["c", "d"]]  # d-e crosses clusters; e alone is dropped


# --- campaigns --------------------------------------------------------------------------

def test_conservative_share_is_below_raw_share_for_small_n() -> None:
    m = pd.DataFrame({"extraction_share": [1.0, 1.0, 0.5, 0.0],
                      "n_exchanges": [3, 100_000, 10, 10], "n_asns": [5, 5, 5, 5]})
    lo = campaigns.conservative(m, "extraction_share")
    assert lo[0] < 0.5  # three exchanges prove little
    assert 0.99 < lo[1] < 1.0
    assert lo[2] < 0.5 and lo[3] == pytest.approx(0.0)
    assert campaigns.conservative(m, "n_asns").tolist() == [5, 5, 5, 5]  # not a share


def test_pooled_evidence_needs_several_accounts_that_each_repeat_the_behaviour() -> None:
    """A young campaign's heads have a few exchanges each: alone none clears the reference
    at the Wilson bound, pooled they do. Accounts with a single such exchange, a pool
    carried by its heaviest member, fewer than three leaning members, or old accounts
    with a small excess do not."""
    t = {"extraction_share": 0.44}

    def members(shares: list[float], n: list[int]) -> pd.DataFrame:
        return pd.DataFrame({"extraction_share": shares, "n_exchanges": n})

    heads = members([0.75, 0.8, 0.67, 0.83, 0.0, 0.0], [4, 5, 6, 6, 3, 2])
    assert not campaigns.above(heads, t, "extraction_share", 1.96).any()  # alone: none
    pool = campaigns.Pool(min_hits=2, max_exchanges=30)
    pooled = campaigns.above(heads, t, "extraction_share", 1.96, pool)
    assert pooled.tolist() == [True, True, True, True, False, False]
    assert campaigns.anomaly(heads, t, 3, {"extraction_share": pool})["extraction_share"] == \
        pytest.approx(21 / 26)
    assert campaigns.anomaly(heads, t, 3)["extraction_share"] == 0.0  # pooling off
    # only the behaviours named are pooled (request shape is what one app's users share)
    shape = heads.rename(columns={"extraction_share": "image_share"})
    assert campaigns.anomaly(shape, {"image_share": 0.44}, 3,
                             {"extraction_share": pool})["image_share"] == 0.0
    # one exchange each: anecdotes, whatever their number
    once = members([1.0] * 12, [1] * 12)
    assert not campaigns.above(once, t, "extraction_share", 1.96, pool).any()
    # the heaviest member carries the pool: left out, two light ones prove little
    heavy = members([0.9, 1.0, 0.5], [200, 2, 4])
    assert campaigns.above(heavy, t, "extraction_share", 1.96, pool).tolist() == \
        [True, False, False]  # the heavy one stands out alone
    assert not campaigns.above(heads.iloc[:2], t, "extraction_share", 1.96, pool).any()
    assert not campaigns.leaning(members([2.0 / 3], [3]), t, "n_asns", 2).any()  # not a share
    # an established campaign (three members above on their own) pulls in no leaning one
    grown = members([0.8, 0.8, 0.8, 0.6], [100, 100, 100, 5])
    assert campaigns.above(grown, t, "extraction_share", 1.96, pool).tolist() == \
        [True, True, True, False]
    # old accounts are not pooled: a small excess over hundreds of exchanges each
    old = members([0.05, 0.06, 0.05, 0.055], [400, 300, 500, 350])
    low = {"extraction_share": 0.04}
    assert not campaigns.above(old, low, "extraction_share", 1.96).any()
    assert campaigns.above(old, low, "extraction_share", 1.96,
                           campaigns.Pool(2, 10_000)).all()  # would be, by volume
    assert not campaigns.above(old, low, "extraction_share", 1.96, pool).any()


def test_reference_thresholds_weigh_each_cluster_once() -> None:
    independent = pd.DataFrame({"extraction_share": np.linspace(0.0, 0.1, 50),
                                "n_exchanges": 1_000_000})
    campaign = pd.DataFrame({"extraction_share": [0.9] * 500, "n_exchanges": 1_000_000})
    feats = pd.concat([independent, campaign], ignore_index=True)
    weights = np.r_[np.ones(50), np.full(500, 1 / 500)]
    th = campaigns.reference_thresholds(feats, weights, 0.9)
    assert set(th) == {"extraction_share"}
    assert th["extraction_share"] < 0.1
    assert campaigns.reference_thresholds(feats, np.ones(550), 0.9)["extraction_share"] > 0.8


def test_weighted_quantile() -> None:
    v = np.array([4.0, 1.0, np.nan, 3.0, 2.0])
    assert campaigns._weighted_quantile(v, np.ones(5), 0.5) == 2.0
    assert campaigns._weighted_quantile(v, np.array([10.0, 1, 1, 1, 1]), 0.5) == 4.0
    assert np.isnan(campaigns._weighted_quantile(np.array([np.nan]), np.ones(1), 0.5))


def _ev(**strengths: float) -> list[campaigns.Evidence]:
    return [campaigns.Evidence(k, v, "", v) for k, v in strengths.items()]


def test_content_coordination_supports_only_extraction_behaviour() -> None:
    """Users of one product share its templates and its request shape: shared families
    with unusual thinking is homophily; the same with unusual extraction prompts, or
    thinking with shared infrastructure, is a campaign. Proxy rotation and tool use never
    stand alone: a platform's tenants share its egress and its tool schema."""
    base = {"coordinated_accounts": 1.0, "volume_inside_benign_range": 1.0}
    homophily = campaigns.score(_ev(shared_template_families=1.0,
                                    unusual_thinking_share=1.0, **base), CFG)[0]
    extraction = campaigns.score(_ev(shared_template_families=1.0,
                                     unusual_extraction_share=1.0,
                                     fillers_extraction_share=1.0, **base), CFG)[0]
    infra_thinking = campaigns.score(_ev(shared_infrastructure=1.0,
                                         unusual_thinking_share=1.0, **base), CFG)[0]
    platform = campaigns.score(_ev(shared_infrastructure=1.0, unusual_tool_share=1.0,
                                   **base), CFG)[0]
    moving = campaigns.score(_ev(shared_infrastructure=1.0, unusual_tool_share=1.0,
                                 release_pivot=1.0, **base), CFG)[0]
    rotation = campaigns.score(_ev(shared_infrastructure=1.0, unusual_n_asns=1.0, **base),
                               CFG)[0]
    threshold = CFG["campaigns"]["score_threshold"]
    assert homophily == 0.0 and rotation == 0.0 and platform == 0.0
    assert min(extraction, infra_thinking, moving) >= threshold


def test_request_shape_of_a_few_members_is_no_campaign() -> None:
    """An organisation's analysts share its networks and card, and the few who think on
    most requests put a quarter of its traffic above the reference: request shape set by
    some members' habits, not a campaign. Most of its traffic thinking is; a quarter of
    it sending extraction prompts is too."""
    m = pd.DataFrame({"account_id": [f"a{i}" for i in range(8)], "n_exchanges": 100,
                      "exchanges_per_active_day": 10.0})

    def score(dim: str, frac: float) -> float:
        facts = campaigns.ClusterFacts(
            cluster=0, members=m, family_share=0.0,
            member_family_share=pd.Series(0.0, index=m["account_id"]),
            synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={"payment": 28},
            vocabulary_pairs=0, pivot=None, benign_volume_p99=80.0,
            anomalies={dim: frac}, thresholds={dim: 0.4})
        return campaigns.score(campaigns.evidence(facts, CFG), CFG)[0]
    threshold = CFG["campaigns"]["score_threshold"]
    assert score("thinking_share", 0.25) < threshold
    assert score("thinking_share", 0.6) >= threshold
    assert score("extraction_share", 0.25) >= threshold


def test_content_coordination_needs_most_template_fillers_extracting() -> None:
    """A notes app's users fill its templates, and those using its "explain step by step"
    command send extraction prompts: content links with half of the fillers' traffic from
    members above the reference is not a campaign. Nearly all of it is, and half is with
    shared infrastructure."""
    c = CFG["campaigns"]

    def ev(share: float, infra: float = 0.0) -> list[campaigns.Evidence]:
        return [campaigns.Evidence("unusual_extraction_share", share, "",
                                   campaigns._ramp(share, c["anomaly_floor"], c["anomaly_full"])),
                campaigns.Evidence("fillers_extraction_share", share, "", campaigns._ramp(
                    share, c["content_anomaly_floor"], c["content_anomaly_full"])),
                *_ev(shared_template_families=1.0, shared_vocabulary=1.0,
                     shared_infrastructure=infra, coordinated_accounts=1.0,
                     volume_inside_benign_range=1.0)]
    threshold = c["score_threshold"]
    assert campaigns.score(ev(0.47), CFG)[0] < threshold
    assert campaigns.score(ev(0.97), CFG)[0] >= threshold
    assert campaigns.score(ev(0.47, infra=1.0), CFG)[0] >= threshold


def test_filler_anomalies_count_the_accounts_sending_the_templates() -> None:
    """Ordinary accounts linked into an operator's template-driven cluster by other ways
    do not dilute its fillers' extraction; a product's users who do not use its
    extraction-like command do."""
    c = CFG["campaigns"]
    th = {"extraction_share": 0.05}

    def members(fam: list[float], ext: list[float]) -> tuple[pd.DataFrame, np.ndarray]:
        return (pd.DataFrame({"account_id": [f"a{i}" for i in range(len(fam))],
                              "n_exchanges": 200, "extraction_share": ext}),
                np.array(fam))
    m, fam = members([0.6] * 12 + [0.0] * 8, [0.5] * 12 + [0.0] * 8)
    anomalies = detect._anomalies(m, th, c)
    assert anomalies["extraction_share"] == pytest.approx(0.6)
    assert detect._filler_anomalies(m, fam, th, anomalies, c) == {"extraction_share": 1.0}
    m, fam = members([0.6] * 12, [0.5] * 6 + [0.0] * 6)
    assert detect._filler_anomalies(m, fam, th, detect._anomalies(m, th, c), c) == {
        "extraction_share": pytest.approx(0.5)}
    # Not template-driven (a harvest of public prompts sent verbatim): no fillers' figure.
    assert detect._filler_anomalies(m, fam / 3, th, detect._anomalies(m, th, c), c) == {}


def _attach_fixture(behaviour: str = "extraction_share", link: str = "ip"
                    ) -> tuple[detect.DuckDBSession, pd.DataFrame, detect._FactContext,
                               pd.DataFrame]:
    """A campaign of 10 accounts filling families f0-f29; 600 ordinary accounts on public
    families; candidates that use the campaign's families: `heavy` (linked to two members
    by `link`, showing `behaviour`), `harness` (same content and behaviour, no links),
    `bystander` (linked, not showing it), `bulk` (linked, showing it, far above ordinary
    volume)."""
    rng = np.random.default_rng(3)
    members = [f"m{i}" for i in range(10)]
    ordinary = [f"u{i:03d}" for i in range(600)]
    rows = [(m, f"f{k}", 3) for m in members for k in rng.choice(30, 12, replace=False)]
    rows += [(u, f"o{k}", 2) for u in ordinary for k in rng.choice(200, 8, replace=False)]
    for cand in ("heavy", "harness", "bystander", "bulk"):
        rows += [(cand, f"f{k}", 1) for k in range(20)]
        rows += [(cand, f"o{k}", 1) for k in rng.choice(200, 40, replace=False)]
    fam = pd.DataFrame(rows, columns=["account_id", "band", "cnt"])
    ids = members + ordinary + ["heavy", "harness", "bystander", "bulk"]
    extracting = set(members) | {"heavy", "harness", "bulk"}
    feats = pd.DataFrame({"account_id": ids, "n_exchanges": 300,
                          behaviour: [0.3 if a in extracting else 0.0 for a in ids],
                          "exchanges_per_active_day": [500.0 if a == "bulk" else 10.0
                                                       for a in ids]})
    linked = [(a, b) for i, a in enumerate(members) for b in members[i + 1:]]
    linked += [(c, m) for c in ("heavy", "bystander", "bulk") for m in members[:2]]
    edges = pd.DataFrame(linked, columns=["src", "dst"]).assign(weight=1.0,
                                                                kinds=linking.kind_bit(link))
    session = detect.DuckDBSession(duckdb.connect())
    session.register("fam", fam)
    detect._family_users(session)
    ctx = detect._FactContext(
        feats=feats.set_index("account_id"), edges=edges, releases=pd.DataFrame(),
        present={"prompt"}, weights=np.where(feats["account_id"].isin(members), 0.1, 1.0),
        quantile=0.99, benign_p99=80.0)
    rows_out = pd.DataFrame({"flagged": [a in members for a in ids]}, index=ids)
    return session, pd.DataFrame({"account_id": members, "cluster": 0}), ctx, rows_out


def test_attach_adds_linked_accounts_filling_a_campaigns_families() -> None:
    session, groups, ctx, acct_rows = _attach_fixture()
    got = detect._attach(session, groups, ctx, CFG, acct_rows, allowlisted=set())
    added = set(got["account_id"]) - set(groups["account_id"])
    assert added == {"heavy"}
    assert acct_rows.at["heavy", "flagged"] and not acct_rows.at["harness", "flagged"]
    assert (got.loc[got["account_id"] == "heavy", "cluster"] == 0).all()


def test_attach_by_content_links_alone_needs_extraction() -> None:
    """Linked to the campaign only by shared phrasings, an account's unusual thinking
    habit does not attach it (the users of one tool share both); through a shared
    network it does, and extraction does through either."""
    def added(behaviour: str, link: str) -> set[str]:
        session, groups, ctx, acct_rows = _attach_fixture(behaviour, link)
        got = detect._attach(session, groups, ctx, CFG, acct_rows, allowlisted=set())
        return set(got["account_id"]) - set(groups["account_id"])
    assert added("thinking_share", "family") == set()
    assert added("thinking_share", "ip") == {"heavy"}
    assert added("extraction_share", "family") == {"heavy"}


def test_attach_without_links_needs_the_groups_proxy_rotation() -> None:
    """An account with no link to the campaign (a heavy head behind residential proxies)
    joins it when it fills its families, extracts and rotates networks as the members
    do; the same content and extraction from a few networks (an evaluation harness) does
    not."""
    def added(harness_asns: int) -> set[str]:
        session, groups, ctx, acct_rows = _attach_fixture()
        ids = ctx.feats.index
        ctx.feats["n_asns"] = np.where(ids.isin(groups["account_id"]), 30, 2)
        ctx.feats.loc["harness", "n_asns"] = harness_asns
        got = detect._attach(session, groups, ctx, CFG, acct_rows, allowlisted=set())
        return set(got["account_id"]) - set(groups["account_id"])
    assert added(harness_asns=2) == {"heavy"}
    assert added(harness_asns=30) == {"heavy", "harness"}


def test_weakly_linked_members_must_show_the_behaviour_themselves() -> None:
    """In a template-driven cluster, filling its templates makes a member; in a cluster
    held together by weak links only (`confirm`), the member must also extract."""
    m = pd.DataFrame({"account_id": ["a", "b", "c", "d"], "n_exchanges": 400,
                      "extraction_share": [0.3, 0.3, 0.3, 0.0]})
    facts = campaigns.ClusterFacts(
        cluster=0, members=m, family_share=0.6,
        member_family_share=pd.Series([0.6, 0.6, 0.6, 0.6], index=list("abcd")),
        synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={}, vocabulary_pairs=6,
        pivot=None, benign_volume_p99=80.0, anomalies={"extraction_share": 0.75},
        thresholds={"extraction_share": 0.05})
    ev = _ev(unusual_extraction_share=1.0)
    c = CFG["campaigns"]
    assert detect._member_strength(m, facts, ev, c) == [1.0, 1.0, 1.0, 1.0]
    assert detect._member_strength(m, facts, ev, c, confirm=True) == [1.0, 1.0, 1.0, 0.0]


def test_filling_a_products_templates_is_no_tie_without_extraction() -> None:
    """An agent's ordinary users fill its system prompt and tool schema as a harvester
    running the agent does: in a template-driven cluster whose evidence is request shape
    or a move to a new release, a member counts when linked by infrastructure or when it
    shows the behaviour itself; with extraction prompts, filling the templates is the
    harvest and makes a member."""
    m = pd.DataFrame({"account_id": ["host1", "host2", "dev1", "dev2"], "n_exchanges": 400,
                      "extraction_share": 0.0, "thinking_share": [0.6, 0.0, 0.6, 0.0]})
    facts = campaigns.ClusterFacts(
        cluster=0, members=m, family_share=0.6,
        member_family_share=pd.Series(0.6, index=m["account_id"]),
        synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={"ip_prefix": 1},
        vocabulary_pairs=6, pivot=None, benign_volume_p99=80.0,
        anomalies={"thinking_share": 1.0}, thresholds={"thinking_share": 0.2},
        infra_linked=frozenset({"host1", "host2"}))
    c = CFG["campaigns"]
    shape = _ev(unusual_thinking_share=1.0, release_pivot=1.0)
    assert detect._member_strength(m, facts, shape, c) == [1.0, 1.0, 1.0, 0.0]
    harvest = _ev(unusual_thinking_share=1.0, unusual_extraction_share=1.0)
    assert detect._member_strength(m, facts, harvest, c) == [1.0] * 4


def test_proxy_rotation_picks_members_only_with_another_behaviour() -> None:
    """Outside template-driven clusters a member must show the cluster's behaviour: at
    `member_z` alone, or at its point estimate when it also rotates networks; rotating
    alone (a reseller's customer on the same cloud pool) is not enough."""
    m = pd.DataFrame({"account_id": ["strong", "light", "rotator", "plain"],
                      "n_exchanges": [400, 10, 400, 10],
                      "extraction_share": [0.3, 0.2, 0.0, 0.2],
                      "n_asns": [30, 30, 30, 2]})
    facts = campaigns.ClusterFacts(
        cluster=0, members=m, family_share=0.0,
        member_family_share=pd.Series(0.0, index=m["account_id"]),
        synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={"ip": 6}, vocabulary_pairs=0,
        pivot=None, benign_volume_p99=80.0,
        anomalies={"extraction_share": 0.9, "n_asns": 0.9},
        thresholds={"extraction_share": 0.05, "n_asns": 8})
    ev = _ev(unusual_extraction_share=1.0, unusual_n_asns=1.0)
    assert detect._member_strength(m, facts, ev, CFG["campaigns"]) == [1.0, 1.0, 0.0, 0.0]


def test_rotating_members_count_at_their_point_estimate_in_the_evidence() -> None:
    """A low-and-slow operator's accounts each lean toward extraction prompts, too few to
    clear the Wilson bound alone, while each rotates through dozens of networks: the two
    indications together count in the cluster's evidence, as they do for membership. The
    same leaning without rotation, or rotation without leaning, does not."""
    m = pd.DataFrame({"account_id": ["r1", "r2", "r3", "home"], "n_exchanges": 75,
                      "extraction_share": [0.08, 0.08, 0.08, 0.08],
                      "n_asns": [30, 30, 30, 2]})
    thresholds = {"extraction_share": 0.05, "n_asns": 8}
    c = CFG["campaigns"]
    assert campaigns.anomaly(m, thresholds, 3, detect._pooled(c))["extraction_share"] == 0.0
    got = detect._anomalies(m, thresholds, c)
    assert got["extraction_share"] == pytest.approx(0.75)
    assert got["n_asns"] == pytest.approx(0.75)
    plain = detect._anomalies(m.assign(n_asns=2), thresholds, c)
    assert plain["extraction_share"] == plain["n_asns"] == 0.0
    quiet = detect._anomalies(m.assign(extraction_share=0.0), thresholds, c)
    assert quiet["extraction_share"] == 0.0
    # Tool use is supporting too, but no such second indication: an IDE agent's users
    # all call tools.
    tools = detect._anomalies(m.assign(n_asns=2, tool_share=1.0),
                              {**thresholds, "tool_share": 0.5}, c)
    assert tools["extraction_share"] == 0.0


def test_members_tied_by_content_alone_must_extract() -> None:
    """A solo developer pulled into a campaign by shared phrasings alone thinks a lot as
    all its peers do: that does not make it a member. The same habit with a shared card,
    or extraction prompts with shared phrasings only, does. In a template-driven group
    the members are the accounts that fill its templates as the others do, whatever made
    them core in their cluster and however they are tied to it."""
    m = pd.DataFrame({"account_id": ["card", "phrasing", "extracting", "x", "y"],
                      "n_exchanges": 400, "extraction_share": [0.0, 0.0, 0.3, 0.3, 0.3],
                      "thinking_share": [0.6, 0.6, 0.0, 0.0, 0.0]})

    def facts(family_shares: list[float]) -> campaigns.ClusterFacts:
        return campaigns.ClusterFacts(
            cluster=0, members=m, family_share=float(np.median(family_shares)),
            member_family_share=pd.Series(family_shares, index=m["account_id"]),
            synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={"payment": 1},
            vocabulary_pairs=2, pivot=None, benign_volume_p99=80.0,
            anomalies={"extraction_share": 0.4, "thinking_share": 0.6},
            thresholds={"extraction_share": 0.05, "thinking_share": 0.2},
            infra_linked=frozenset({"card"}))
    ev = _ev(unusual_extraction_share=1.0, unusual_thinking_share=1.0)
    c = CFG["campaigns"]
    assert detect._member_strength(m, facts([0.0] * 5), ev, c) == [1.0] * 5
    assert detect._bystanders(facts([0.0] * 5), ev, c) == {"phrasing"}
    assert detect._bystanders(facts([0.6] * 5), ev, c) == set()
    assert detect._bystanders(facts([0.01, 0.01, 0.6, 0.6, 0.6]), ev, c) \
        == {"card", "phrasing"}
    assert detect._bystanders(facts([0.6, 0.01, 0.15, 0.6, 0.6]), ev, c) \
        == {"phrasing", "extracting"}


def test_members_of_a_pivoting_campaign_show_the_move_themselves() -> None:
    """A campaign that moved to a new release and stands out on another behaviour: its
    members that moved themselves (more exchanges on the new model in the 24 h after
    release than everyone else's share makes likely) carry that behaviour; a member that
    stayed, or sent too little to tell, does not; without the pivot in the evidence, or
    with the pivot alone, the move makes no member."""
    at = datetime(2026, 3, 10)
    rows = [("m1", "new", 10), ("m2", "new", 9), ("m2", "old", 1), ("stayed", "old", 10),
            ("light", "new", 1), ("u1", "old", 30), ("u2", "new", 3), ("u2", "old", 27)]
    xs = pd.DataFrame([(a, m, at + timedelta(hours=1 + i % 20), hash((a, m, i)))
                       for a, m, n in rows for i in range(n)],
                      columns=["account_id", "model", "ts", "prompt_hash"])
    xs.loc[len(xs)] = ["m1", "old", at - timedelta(hours=2), 1]  # before the release: ignored
    session = detect.DuckDBSession(duckdb.connect())
    session.register("xs", xs)
    members = ["m1", "m2", "stayed", "light"]
    counts = detect._release_counts(session, pd.DataFrame({"model": ["new"], "released_at": [at]}))
    pv = detect._pivots(counts, pd.DataFrame({"account_id": members, "cluster": 0}))[0]
    assert (pv.share, pv.ref) == pytest.approx((20 / 31, 3 / 60))
    moved = detect._member_pivot(pv, members, CFG["campaigns"])
    assert moved.tolist() == [True, True, False, False]
    m = pd.DataFrame({"account_id": members, "n_exchanges": 40, "thinking_share": 0.0,
                      "tool_share": 1.0})
    facts = campaigns.ClusterFacts(
        cluster=0, members=m, family_share=0.0,
        member_family_share=pd.Series(0.0, index=members),
        synchrony=timing.Synchrony(0, 0, 0, 0), infra_kinds={"payment": 3},
        vocabulary_pairs=0, pivot=(pv.share, pv.ref), benign_volume_p99=80.0,
        anomalies={"thinking_share": 0.0, "tool_share": 1.0},
        thresholds={"thinking_share": 0.2, "tool_share": 0.5}, member_pivot=moved)
    c = CFG["campaigns"]
    both = _ev(release_pivot=1.0, unusual_thinking_share=1.0)
    assert detect._member_strength(m, facts, both, c) == [1, 1, 0, 0]
    assert detect._member_strength(m, facts, _ev(unusual_thinking_share=1.0), c) == [0] * 4
    # A move alone: colleagues behind one office address trying the new model on day one.
    assert detect._member_strength(m, facts, _ev(release_pivot=1.0), c) == [0] * 4
    # With a supporting behaviour (a harvester's agent calls every request with tools).
    tools = _ev(release_pivot=1.0, unusual_tool_share=1.0)
    assert detect._member_strength(m, facts, tools, c) == [1, 1, 0, 0]


def test_a_team_comparing_models_on_its_own_prompts_does_not_pivot() -> None:
    """In the 24 h after a release, exchanges on the new model count as moved only when
    their account never sent that prompt to another model (before or after): a nightly
    evaluation replaying its suite on the new model compares models; a harvester sending
    new prompts there moves. Prompts with no text (NULL hash) are never a comparison."""
    at = datetime(2026, 3, 10)
    suite = [f"case {i}" for i in range(10)]
    rows = ([("evals", "old", p, at - timedelta(days=1)) for p in suite]  # last night's run
            + [("evals", "new", p, at + timedelta(hours=2)) for p in suite]
            + [("evals", "new", "a new case", at + timedelta(hours=3))]
            + [("harvester", "new", f"task {i}", at + timedelta(hours=1)) for i in range(8)]
            + [("harvester", "old", "task 0", at + timedelta(hours=30))]  # later, elsewhere
            + [("no_text", "new", None, at + timedelta(hours=1)) for _ in range(3)]
            + [("no_text", "old", None, at - timedelta(hours=1))])
    xs = pd.DataFrame(rows, columns=["account_id", "model", "prompt", "ts"])
    codes = pd.Series(pd.factorize(xs["prompt"])[0])  # -1: no text
    xs["prompt_hash"] = codes.where(codes >= 0).astype("Int64")
    session = detect.DuckDBSession(duckdb.connect())
    session.register("xs", xs.drop(columns="prompt"))
    counts = detect._release_counts(session, pd.DataFrame({"model": ["new"], "released_at": [at]}))
    got = counts.set_index("account_id")[["new", "total"]].to_dict("index")
    assert got == {"evals": {"new": 1, "total": 11}, "harvester": {"new": 7, "total": 8},
                   "no_text": {"new": 3, "total": 3}}


def test_shared_families_are_the_clusters_own_not_public_ones() -> None:
    """A family every account uses (a public benchmark prompt, a stock phrasing) is not
    the cluster's template even when all its members use it."""
    members = [f"m{i}" for i in range(5)]
    rows = [(m, band, 5) for m in members for band in ("own", "public")]
    rows += [(f"u{i:03d}", "public", 5) for i in range(100)]
    session = detect.DuckDBSession(duckdb.connect())
    session.register("fam", pd.DataFrame(rows, columns=["account_id", "band", "cnt"]))
    detect._family_users(session)
    session.register("members", pd.DataFrame({"account_id": members, "cluster": 0,
                                              "csize": 5}))
    member, cluster = detect._family_facts(session, 105, CFG)
    assert member.tolist() == [0.5] * 5 and cluster[0] == pytest.approx(0.5)


def test_combined_edges_add_weights_and_merge_kinds() -> None:
    a = pd.DataFrame({"src": ["a", "b"], "dst": ["b", "c"], "weight": [1.0, 0.5],
                      "kinds": [linking.kind_bit("ip"), linking.kind_bit("payment")]})
    b = pd.DataFrame({"src": ["a"], "dst": ["b"], "weight": [0.25],
                      "kinds": [linking.kind_bit("vocabulary")]})
    both = linking.combine_edges(a, b)
    assert both["weight"].tolist() == [1.25, 0.5]
    assert linking.kind_lists(both["kinds"]).to_pylist() == [["ip", "vocabulary"], ["payment"]]
    assert linking.has_kind(both["kinds"], "vocabulary").tolist() == [True, False]


def test_one_organisation_in_the_open_is_not_a_campaign() -> None:
    """Forty seats of one declared organisation grading claims against a rubric are one
    customer, reported for review and not flagged; a reseller's organisation holds its
    customers' accounts, and a group spread over several organisations hides behind them:
    both stay campaigns."""
    ids = {"open": [f"o{i}" for i in range(10)], "resold": [f"r{i}" for i in range(10)],
           "spread": [f"s{i}" for i in range(10)]}
    feats = pd.DataFrame({
        "org_id": ["org-a"] * 10 + ["org-r"] * 10 + [f"org-{i}" for i in range(10)],
        "verification_path": ["enterprise"] * 10 + ["reseller"] * 10 + ["startup"] * 10},
        index=[a for v in ids.values() for a in v])
    rows = pd.DataFrame({"score": 0.9, "flagged": True, "campaign_id": "c",
                         "reasons": [["unusual_extraction_share:1"]] * 30}, index=feats.index)
    ev = [campaigns.Evidence("unusual_extraction_share", 1.0, "", 1.0)]
    found = [{"campaign_id": k, "score": 0.9, "account_ids": v, "_evidence": ev}
             for k, v in ids.items()]
    kept, orgs = detect._organisation_use(found, feats, rows, CFG["campaigns"])
    assert [k["campaign_id"] for k in kept] == ["resold", "spread"]
    assert [(o["org_id"], o["account_ids"]) for o in orgs] == [("org-a", ids["open"])]
    assert not rows.loc[ids["open"], "flagged"].any()
    assert rows.loc[ids["resold"] + ids["spread"], "flagged"].all()
    assert rows.at["o0", "reasons"][0] == "organisation_use:org-a"
    assert rows.loc[ids["open"], "campaign_id"].isna().all()
    blank = feats.assign(org_id=[""] * 20 + [" "] * 10, verification_path="standard")
    again, none = detect._organisation_use(found, blank, rows, CFG["campaigns"])
    assert len(again) == 3 and none == []


def test_a_piece_split_off_an_accepted_group_brings_only_its_own_score(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Leiden separates a product's beta testers from the operator they were clustered
    with (a few shared keys): the operator's piece, the main one, keeps the group's score;
    the testers' piece is measured on its own, the way its group was, and brings that
    score; a group that was not split keeps its own."""
    op, users, other = ([f"{p}{i}" for i in range(n)] for p, n in (("op", 10), ("u", 6),
                                                                     ("b", 4)))
    accepted = [detect.Accepted(sorted(op + users), 0.9, None),
                detect.Accepted(other, 0.8, ("extraction_share",))]
    split = pd.DataFrame({"account_id": sorted(op + users) + other,
                          "cluster": [0 if a in op else 1 for a in sorted(op + users)] + [2] * 4})
    parent = pd.Series([0] * 16 + [1] * 4)
    measured = []

    def own(session: Any, part: pd.DataFrame, ctx: Any, cfg: dict[str, Any],
            behaviours: tuple[str, ...] | None) -> list[tuple[Any, list[Any], float]]:
        measured.append((sorted(part["account_id"]), behaviours))
        return [(SimpleNamespace(cluster=c), [], 0.3) for c in sorted(set(part["cluster"]))]

    monkeypatch.setattr(detect, "_scored", own)
    floors = detect._split_off_scores(None, split, parent, accepted, None, CFG)  # type: ignore[arg-type]
    assert measured == [(users, None)]
    assert dict(zip(split["account_id"], floors, strict=True)) == (
        dict.fromkeys(op, 0.9) | dict.fromkeys(users, 0.3) | dict.fromkeys(other, 0.8))


def test_a_group_below_the_threshold_is_no_campaign(monkeypatch: pytest.MonkeyPatch) -> None:
    """A final group whose own evidence and floor stay below the threshold (pieces split
    off, no campaign alone) is not reported and its accounts are not flagged."""
    ids = {0: ["a0", "a1", "a2"], 1: ["t0", "t1", "t2"]}
    facts = {k: SimpleNamespace(members=pd.DataFrame({"account_id": v}),
                                member_family_share=pd.Series(0.0, index=v), cluster=k)
             for k, v in ids.items()}
    monkeypatch.setattr(detect, "_gather_facts", lambda *_: facts)
    monkeypatch.setattr(detect.cmp, "evidence", lambda f, cfg: [campaigns.Evidence(
        "unusual_extraction_share", float(f.cluster), "", 1.0)])
    monkeypatch.setattr(detect.cmp, "score", lambda e, cfg: ((0.9, 1, 1) if e[0].value == 0
                                                             else (0.3, 1, 0.1)))
    rows = pd.DataFrame({"score": 0.7, "flagged": True, "campaign_id": None,
                         "reasons": [[]] * 6}, index=ids[0] + ids[1])
    ctx = SimpleNamespace(feats=pd.DataFrame({"extraction_share": 0.5}, index=rows.index))
    out = detect._final_campaigns(None, pd.DataFrame(), pd.Series({0: 0.6, 1: 0.4}),  # type: ignore[arg-type]
                                  ctx, CFG, rows)
    assert [c["account_ids"] for c in out] == [ids[0]]
    assert rows.loc[ids[0], "flagged"].all() and not rows.loc[ids[1], "flagged"].any()
    assert rows.loc[ids[1], "score"].tolist() == [0.4] * 3  # its floor: above its own 0.3
    assert rows.loc[ids[1], "campaign_id"].isna().all()
