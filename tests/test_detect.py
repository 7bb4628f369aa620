"""End-to-end detection on a simulated scenario, scored against its ground truth.

The floors are well under what the detector measures on full-size scenarios (README):
they catch a regression, not noise from the small scale used here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import SHARED_PROMPTS
from distillguard import config
from distillguard.contract import ACCOUNTS_OUT_COLUMNS, CAMPAIGN_KEYS, CAPABILITIES, INDICATOR_KEYS
from distillguard.evaluate import evaluate_run
from distillguard.pipeline import run_detection
from distillguard.simulate import generate


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    generate("small", 3, 0.5, out)
    return out


@pytest.fixture(scope="module")
def run(scenario: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run_detection([scenario / "exchanges"], out, config.load(),
                  accounts=[scenario / "accounts.parquet"],
                  releases=[scenario / "releases.parquet"])
    return out


def test_outputs_follow_the_contract(run: Path, scenario: Path) -> None:
    acc = pq.read_table(run / "accounts.parquet")
    assert tuple(acc.schema.names) == ACCOUNTS_OUT_COLUMNS
    ex_accounts = pd.read_parquet(scenario / "exchanges", columns=["account_id"])["account_id"]
    assert set(acc.column("account_id").to_pylist()) == set(ex_accounts)
    scores = acc.column("score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    campaigns = json.loads((run / "campaigns.json").read_text())
    assert campaigns, "no campaign found on a scenario with five operators"
    df = acc.to_pandas()
    for c in campaigns:
        assert tuple(c) == CAMPAIGN_KEYS
        assert set(c["indicators"]) == set(INDICATOR_KEYS)
        assert set(c["capabilities"]) <= set(CAPABILITIES)
        # Shares are rounded to 6 decimals: each may be off by half a unit there.
        assert abs(sum(c["capabilities"].values()) - 1) <= 5e-7 * len(c["capabilities"]) + 1e-12
        members = df[df["campaign_id"] == c["campaign_id"]]
        assert sorted(members["account_id"]) == sorted(c["account_ids"])
        assert members["flagged"].all() and len(members) == c["n_accounts"]
        assert all(len(r) > 0 for r in members["reasons"])
    assert not df.loc[~df["flagged"], "campaign_id"].notna().any()


def test_metrics_stay_above_floor(run: Path, scenario: Path) -> None:
    result = evaluate_run(scenario / "truth.parquet", run)
    det = result["systems"]["detector"]
    assert det["precision"] >= 0.97
    assert det["recall"] >= 0.85
    assert det["ari"] >= 0.85


def test_allowlisted_accounts_are_never_flagged(run: Path, scenario: Path) -> None:
    accounts = pd.read_parquet(scenario / "accounts.parquet")
    allow = set(accounts.loc[accounts["allowlisted"].fillna(False), "account_id"])
    flagged = pd.read_parquet(run / "accounts.parquet").query("flagged")["account_id"]
    assert allow and not allow & set(flagged)
    listed = {p["account_id"] for p in json.loads((run / "run.json").read_text())
              ["permitted_distillation"]}
    assert listed == allow & set(pd.read_parquet(scenario / "exchanges",
                                                 columns=["account_id"])["account_id"])


def test_same_input_same_output(run: Path, scenario: Path, tmp_path: Path) -> None:
    run_detection([scenario / "exchanges"], tmp_path, config.load(),
                  accounts=[scenario / "accounts.parquet"],
                  releases=[scenario / "releases.parquet"])
    assert (tmp_path / "campaigns.json").read_text() == (run / "campaigns.json").read_text()
    parts = sorted(p.name for p in run.glob("*.parquet"))
    assert {"accounts.parquet", "account_features.parquet", "edges.parquet"} <= set(parts)
    for name in parts:  # byte for byte: float sums in the engine must not leak their order
        assert (tmp_path / name).read_bytes() == (run / name).read_bytes(), name


def test_missing_optional_columns_degrade_gracefully(scenario: Path, tmp_path: Path) -> None:
    """No prompt text, no accounts file: text signals are skipped and said so, no crash."""
    ex = pd.read_parquet(scenario / "exchanges").head(20_000)
    ex["prompt"] = None
    ex = ex.drop(columns=["system_prompt", "tool_names"])
    ex.to_parquet(tmp_path / "ex.parquet")
    out = tmp_path / "run"
    run_detection([tmp_path / "ex.parquet"], out, config.load())
    skipped = json.loads((out / "run.json").read_text())["signals"]["skipped"]
    assert "cot_elicitation" in skipped and "template_family" in skipped
    assert "prompt" in skipped["cot_elicitation"]
    assert (out / "accounts.parquet").exists()


@pytest.mark.skipif(not SHARED_PROMPTS.is_dir(), reason="shared prompt test set not present")
def test_real_prompt_text_keeps_precision(tmp_path: Path) -> None:
    """The same scenario with real public prompts instead of the grammar's text (docs/
    detection.md, "Real prompt text"): no rule was tuned on this text. Floors under the
    measured 1.000 / 0.763 / 0.823; the low-and-slow evader is not found here (0 of 25),
    the known weak case."""
    sim = tmp_path / "sim"
    generate("small", 3, 0.5, sim, prompts_dir=SHARED_PROMPTS)
    run_detection([sim / "exchanges"], tmp_path / "run", config.load(),
                  accounts=[sim / "accounts.parquet"], releases=[sim / "releases.parquet"])
    det = evaluate_run(sim / "truth.parquet", tmp_path / "run")["systems"]["detector"]
    assert det["precision"] >= 0.97
    assert det["recall"] >= 0.7
    assert det["ari"] >= 0.75
    found = det["recall_by_operator"]
    assert found["cot-harvester"]["recall"] == found["hydra-harvester"]["recall"] == 1.0
