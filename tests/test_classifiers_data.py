"""Regression floors for the text classifiers on the public prompt sets.

Runs `bench/classifiers.py` (the registered signals' own Ibis expressions on DuckDB) on a
fixed-seed sample of at most 120 prompts per file (about 2,800 rows). The floors are the
figures measured on that sample (docs/signals.md, `--per-file 120`) loosened by 0.05 for
rates that should stay high and by 0.02 for false-positive rates: tuning a pattern may
move them a little, a regression fails here. Skipped when the data folder is absent.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from conftest import SHARED_PROMPTS as DATA

ROOT = Path(__file__).resolve().parents[1]
PER_FILE = 120

# Measured on the sample (bench/classifiers.py --per-file 120).
MEASURED = {"grading_recall": 1.000, "grading_fpr": 0.008, "cot_precision": 0.862,
            "cot_recall": 0.909, "cot_fpr": 0.003, "safe_rewrite_fpr": 0.001,
            "capability_accuracy": 0.663,
            # instruction_task: the lower of Alpaca-GPT4's and Code Alpaca's share, and
            # ShareGPT's (real users' first turns)
            "task_instruction_sets": 0.617, "task_sharegpt": 0.067}
CAPABILITY_RECALL = {"coding": 0.854, "agentic_tool_use": 0.361, "reasoning_math": 0.638,
                     "grading_reward": 0.976, "safety_sensitive": 0.156, "writing": 0.683,
                     "knowledge_qa": 0.839, "chat_other": 0.673}


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_classifiers",
                                                  ROOT / "bench" / "classifiers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if not any(DATA.glob("*.jsonl")):
        pytest.skip(f"prompt data not found at {DATA}")
    return _bench()


@pytest.fixture(scope="module")
def measured(bench: ModuleType) -> Any:  # bench.Measured
    return bench.measure(bench.load(DATA, per_file=PER_FILE, seed=0))


def test_sample_is_bounded_and_covers_every_file(measured: Any) -> None:
    rows = measured.rows
    assert len(rows) <= 3000
    assert rows.groupby("file").size().max() <= PER_FILE
    assert rows["file"].nunique() == len(list(DATA.glob("*.jsonl")))


def test_grading_prompt_floors(bench: ModuleType, measured: Any) -> None:
    g = bench.grading_rates(measured)
    assert g["n_pos"] >= 100
    assert g["recall"] >= MEASURED["grading_recall"] - 0.05
    assert g["fpr"] <= MEASURED["grading_fpr"] + 0.02


def test_cot_elicitation_floors(bench: ModuleType, measured: Any) -> None:
    c = bench.cot_rates(measured)
    assert c["n_pos"] >= 30
    assert c["precision"] >= MEASURED["cot_precision"] - 0.05
    assert c["recall"] >= MEASURED["cot_recall"] - 0.05
    assert c["fpr"] <= MEASURED["cot_fpr"] + 0.02


def test_safe_rewrite_rarely_fires_on_organic_prompts(bench: ModuleType,
                                                      measured: Any) -> None:
    assert bench.organic_fpr(measured, "safe_rewrite") <= MEASURED["safe_rewrite_fpr"] + 0.02


def test_extraction_cues_separate_distillation_from_organic(bench: ModuleType,
                                                            measured: Any) -> None:
    d = measured.rows
    flagged = d[list(bench.CUES)].any(axis=1)
    share = flagged.groupby(d["kind"]).mean()
    assert share["distillation"] > 2 * share["organic"]


def test_instruction_tasks_mark_instruction_sets_not_user_prompts(bench: ModuleType,
                                                                  measured: Any) -> None:
    share = measured.rows.groupby("file")[bench.TASK].mean()
    sets = share[["distill_alpaca_gpt4_demo_llamafactory", "distill_code_alpaca"]].min()
    assert sets >= MEASURED["task_instruction_sets"] - 0.05
    assert share["organic_sharegpt_first_turns"] <= MEASURED["task_sharegpt"] + 0.02


def test_capability_floors(bench: ModuleType, measured: Any) -> None:
    table, accuracy = bench.capability_table(measured)
    assert accuracy >= MEASURED["capability_accuracy"] - 0.05
    recall = table.set_index("category")["recall"]
    for category, floor in CAPABILITY_RECALL.items():
        assert recall[category] >= floor - 0.05, category
