"""Precision and recall of the text classifiers on the public prompt sets.

Run by hand; it prints Markdown tables that go to docs/signals.md:

    .venv/bin/python bench/classifiers.py                       # all 34k prompts
    .venv/bin/python bench/classifiers.py --per-file 120        # the sample the test uses

The prompts are loaded into an exchanges table typed as the contract (every other column
NULL) and the registered signals run on it through their own Ibis expressions on DuckDB:
what is measured is what the detector computes. Labels come from the files, not from
the classifiers (see LABELS below and docs/signals.md); tests/test_classifiers_data.py
imports `measure` from here to guard the figures.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import ibis
import numpy as np
import pandas as pd

import distillguard.features  # noqa: F401  (registers every signal)
from distillguard.contract import CAPABILITIES, EXCHANGES
from distillguard.ingest.validate import SQL_TYPE
from distillguard.signals.registry import ACCOUNT_SIGNALS, EXCHANGE_SIGNALS

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "prompts"
JUDGE_FILE = "distill_judge_grading_prompts"
METAMATH = "distill_metamath_augmentation_prompts"
# How the files' system prompts declare functions (BFCL-live, Glaive, ToolBench, CAMEL).
TOOL_DECLARATION = (r"Available functions \(JSON\)|access to the following functions"
                    r"|^Tools:|\nTools:|You are AutoGPT")
CUES = ("cot_elicitation", "grading_prompt", "safe_rewrite")
# Not an extraction cue: what an account's task_share counts (once per template family).
TASK = "instruction_task"

# The files' `category` (upstream labels where they exist, otherwise a keyword heuristic
# of the data set's builder) mapped to the contract's capability categories.
CATEGORY_MAP = {
    "math": "reasoning_math", "reasoning": "reasoning_math", "coding": "coding",
    "agentic_tool_use": "agentic_tool_use", "safety": "safety_sensitive",
    "grading": "grading_reward", "writing": "writing", "qa": "knowledge_qa",
    "other": "chat_other", "chat": "chat_other", "roleplay": "chat_other",
}

# Reference labels for chain-of-thought elicitation: the prompt (or its system prompt)
# asks the model to show or write out its reasoning for the answer. Written independently
# of COT_PATTERN and deliberately narrower about "step by step": a request for a
# step-by-step *guide / instructions / plan* asks for a procedure, not for reasoning.
COT_REFERENCE = re.compile(
    r"(think|solve|reason|answer|work|go|explain|solution|explanation|reasoning|thought)"
    r"\w*\b[^.?!\n]{0,25}\bstep[- ]by[- ]step(?! (guide|instructions?|tutorial|plan|process"
    r"|procedure|approach))"
    r"|step[- ]by[- ]step (reasoning|solution|explanation|thinking|thought|calculation"
    r"|derivation|analysis)"
    r"|let'?s think|think (it |this |things )?(through|carefully|aloud|out loud|step)"
    r"|chain[- ]of[- ]thought|<think>|scratchpad"
    r"|(explain|show|justify|provide|give|include|describe|walk (me )?through|write out"
    r"|lay out|spell out|detail|output)( me)? (all of |each of )?(your|the|a|his|her|its)"
    r" (full |complete |detailed |brief |short |step-by-step )?(reasoning|rationale"
    r"|thought process|thinking|work(ing)?|calculations?|logic|justification|derivation)\b"
    r"|(justify|explain) (your|the) (answer|choice|response)"
    r"|show (your|all|the) (steps|work)"
    r"|(write down|write out|show|provide|list|give) (the |your |a )?reasoning steps?",
    re.IGNORECASE)
# ... unless the request is negated ("don't explain your answer, just give the patterns").
COT_NEGATED = re.compile(
    r"(don'?t|do not|no need to|without|never) (explain|show|justify|provide|give|include)"
    r" (me )?(your|the|any) ", re.IGNORECASE)


@dataclass(frozen=True)
class Measured:
    """Per-row classifier outputs next to the reference labels."""

    rows: pd.DataFrame  # file, kind, category, expected, cue flags, capability, cot_label


def load(data_dir: Path, per_file: int | None = None, seed: int = 0,
         tools_from_system: bool = False) -> ibis.BaseBackend:
    """An in-memory DuckDB holding `exchanges` (contract-typed) plus the files' labels;
    `per_file` keeps a fixed-seed sample of at most that many rows per file.
    `tools_from_system` fills `tool_names` where the system prompt carries the function
    definitions (as real API traffic carries them in the tools field)."""
    files = sorted(data_dir.glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no *.jsonl prompt files in {data_dir}")
    raw = duckdb.connect()
    paths = ", ".join("'" + str(f).replace("'", "''") + "'" for f in files)
    raw.execute(f"""
        CREATE TABLE prompts AS
        SELECT regexp_extract(filename, '([^/]+)\\.jsonl$', 1) AS file, text, system,
               kind, category
        FROM read_json([{paths}], filename = true, format = 'newline_delimited',
             columns = {{text: 'VARCHAR', system: 'VARCHAR', source: 'VARCHAR',
                        kind: 'VARCHAR', category: 'VARCHAR'}})""")
    if per_file is not None:
        raw.execute(f"""
            CREATE OR REPLACE TABLE prompts AS SELECT * EXCLUDE (r) FROM (
                SELECT *, row_number() OVER (PARTITION BY file
                    ORDER BY hash(coalesce(text, '') || coalesce(system, '') || '{seed}')) AS r
                FROM prompts) WHERE r <= {int(per_file)}""")
    given = {"exchange_id": "CAST(row_number() OVER (ORDER BY file, text, system) AS VARCHAR)",
             "ts": "TIMESTAMP '2026-01-01 00:00:00'", "account_id": "file",
             "prompt": "text", "system_prompt": "system"}
    if tools_from_system:
        given["tool_names"] = (f"CASE WHEN regexp_matches(system, '{TOOL_DECLARATION}') "
                               "THEN ['declared'] END")
    cols = [f"{given.get(c.name, f'NULL::{SQL_TYPE[c.kind]}')} AS {c.name}"
            for c in EXCHANGES.columns]
    raw.execute(f"CREATE TABLE exchanges AS SELECT {', '.join(cols)}, file, kind, category "
                "FROM prompts")
    return ibis.duckdb.from_connection(raw)


def measure(con: ibis.BaseBackend) -> Measured:
    """Run the registered classifiers over `exchanges` in the engine; attach labels."""
    t = con.table("exchanges")
    sig = {n: EXCHANGE_SIGNALS[n].build(t) for n in (*CUES, TASK, "capability")}
    df = con.execute(t.select("file", "kind", "category", "prompt", "system_prompt", **sig))
    text = df["prompt"].fillna("") + " " + df["system_prompt"].fillna("")
    df["cot_label"] = text.map(lambda s: COT_REFERENCE.search(s) is not None
                               and COT_NEGATED.search(s) is None)
    df["expected"] = df["category"].map(CATEGORY_MAP).fillna("chat_other")
    return Measured(df.drop(columns=["prompt", "system_prompt"]))


def rates(flag: pd.Series, label: pd.Series) -> dict[str, float]:
    """Precision, recall, false-positive rate and counts of a boolean classifier."""
    flag, label = flag.astype(bool), label.astype(bool)
    tp = int((flag & label).sum())
    fp = int((flag & ~label).sum())
    fn = int((~flag & label).sum())
    tn = int((~flag & ~label).sum())
    return {"n_pos": tp + fn, "n_neg": fp + tn,
            "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "fpr": fp / (fp + tn) if fp + tn else float("nan")}


def grading_rates(m: Measured) -> dict[str, float]:
    """Grading: positives are the judge-prompt file; negatives the organic files."""
    d = m.rows[(m.rows["file"] == JUDGE_FILE) | (m.rows["kind"] == "organic")]
    return rates(d["grading_prompt"], d["file"] == JUDGE_FILE)


def cot_rates(m: Measured, without_fobar: bool = False) -> dict[str, float]:
    """CoT elicitation against the COT_REFERENCE labels, all files (or all but the
    MetaMath file, whose 230 FOBAR prompts share one "Let's think step by step" ending)."""
    d = m.rows[m.rows["file"] != METAMATH] if without_fobar else m.rows
    return rates(d["cot_elicitation"], d["cot_label"])


def organic_fpr(m: Measured, cue: str) -> float:
    """Share of organic prompts a cue flags (the cue's false-positive rate on ordinary
    traffic when no organic prompt is a positive, as for safe_rewrite)."""
    return float(m.rows.loc[m.rows["kind"] == "organic", cue].astype(bool).mean())


def capability_table(m: Measured) -> tuple[pd.DataFrame, float]:
    """Per contract category: support, precision, recall; and overall accuracy."""
    d = m.rows
    out = []
    for c in CAPABILITIES:
        r = rates(d["capability"] == c, d["expected"] == c)
        out.append({"category": c, "support": r["n_pos"],
                    "predicted": int((d["capability"] == c).sum()),
                    "precision": r["precision"], "recall": r["recall"]})
    return pd.DataFrame(out), float((d["capability"] == d["expected"]).mean())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "n/a" if np.isnan(v) else f"{v:.3f}"
    return str(v)


def markdown(df: pd.DataFrame) -> str:
    head = "| " + " | ".join(df.columns) + " |"
    sep = "|" + "---|" * len(df.columns)
    body = ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def signal_list() -> str:
    rows = [{"level": s.level, "name": s.name, "requires": ", ".join(s.requires) or "-",
             "description": s.description}
            for s in [*EXCHANGE_SIGNALS.values(), *ACCOUNT_SIGNALS.values()]]
    return markdown(pd.DataFrame(rows))


def report(m: Measured) -> str:
    d = m.rows
    parts = ["## Registered signals", signal_list()]
    g, c, c2 = grading_rates(m), cot_rates(m), cot_rates(m, without_fobar=True)
    cue_rows = [{"classifier": "grading_prompt", "positives": f"{JUDGE_FILE} ({g['n_pos']})",
                 "negatives": f"organic files ({g['n_neg']})", **{k: g[k] for k in
                                                                 ("precision", "recall", "fpr")}},
                {"classifier": "cot_elicitation",
                 "positives": f"COT_REFERENCE matches ({c['n_pos']})",
                 "negatives": f"all other rows ({c['n_neg']})",
                 **{k: c[k] for k in ("precision", "recall", "fpr")}},
                {"classifier": "cot_elicitation (without MetaMath)",
                 "positives": f"COT_REFERENCE matches ({c2['n_pos']})",
                 "negatives": f"all other rows ({c2['n_neg']})",
                 **{k: c2[k] for k in ("precision", "recall", "fpr")}}]
    fobar = d["file"].eq(METAMATH) & d["cot_label"]
    parts += ["## Extraction cues", markdown(pd.DataFrame(cue_rows)),
              f"cot_elicitation recall on the MetaMath FOBAR prompts that end in "
              f"\"Let's think step by step\": {_fmt(float(d.loc[fobar, 'cot_elicitation'].mean()))}"
              f" (n={int(fobar.sum())}). safe_rewrite has no positive set in the data; its "
              f"false-positive rate on organic prompts is {_fmt(organic_fpr(m, 'safe_rewrite'))}"
              f" and on all prompts {_fmt(float(d['safe_rewrite'].mean()))}."]
    flags = d.assign(any_cue=d[list(CUES)].any(axis=1))
    shown = [*CUES, "any_cue", TASK]
    per_kind = flags.groupby("kind")[shown].mean().reset_index()
    per_kind.insert(1, "rows", flags.groupby("kind").size().to_numpy())
    per_file = flags.groupby(["kind", "file"])[shown].mean().reset_index()
    per_file.insert(2, "rows", flags.groupby(["kind", "file"]).size().to_numpy())
    parts += ["## Share of prompts flagged, distillation-style vs organic",
              markdown(per_kind), markdown(per_file)]
    cap, acc = capability_table(m)
    confusion = pd.crosstab(d["expected"], d["capability"]).reset_index()
    parts += ["## Capability", markdown(cap), f"Overall accuracy: {acc:.3f} (n={len(d)}).",
              "Confusion (rows: file category mapped; columns: classifier):",
              markdown(confusion)]
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--per-file", type=int, default=None,
                        help="fixed-seed sample of at most this many rows per file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools-from-system", action="store_true",
                        help="set tool_names where the system prompt declares functions")
    args = parser.parse_args()
    if not args.data.is_dir() or not any(args.data.glob("*.jsonl")):
        sys.exit(f"error: no prompt files (*.jsonl) in {args.data}; pass --data DIR")
    print(report(measure(load(args.data, args.per_file, args.seed, args.tools_from_system))))


if __name__ == "__main__":
    main()
