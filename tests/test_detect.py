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


PROBLEMS = ["A train leaves at 3 pm at 60 km/h; a second leaves at 4 pm at 90 km/h. When does "
            "the second catch up?", "Find all real x with x^2 - 5x + 6 = 0.",
            "A shirt costs $40 after a 20% discount. What was the original price?",
            "How many ways can 5 students sit in a row if two must sit together?",
            "The sum of three consecutive integers is 72. What are they?",
            "A tank fills in 6 hours with pipe A and 4 hours with pipe B. How long with both?",
            "What is the probability of two heads in three coin tosses?",
            "Simplify (3x^2 y)^2 / (9 x y^3)."]


def _with_classroom(scenario: Path, out: Path, students: int = 30) -> set[str]:
    """The scenario plus a class: students who signed up together on the education path
    from one campus network, and in each session work through the same problems, each
    asked step by step (docs/detection.md, "Shared stimulus"). Returns their accounts."""
    ex = pd.read_parquet(scenario / "exchanges")
    accounts = pd.read_parquet(scenario / "accounts.parquet")
    start = ex["ts"].min().normalize() + pd.Timedelta(days=1, hours=14)
    ids = [f"acct_class{i:03d}" for i in range(students)]
    acc = pd.DataFrame({"account_id": ids, "created_at": [start + pd.Timedelta(minutes=i)
                                                          for i in range(students)],
                        "org_id": None, "email_domain": "students.example.edu",
                        "payment_fingerprint": None,
                        "signup_ip": [f"198.51.100.{10 + i}" for i in range(students)],
                        "signup_asn": 64500, "country": "US",
                        "verification_path": "education", "allowlisted": False})
    rows = []
    for session in range(4):  # twice a week, four problems each
        t0 = start + pd.Timedelta(days=3.5 * session, minutes=5)
        for k, problem in enumerate(PROBLEMS[2 * session:2 * session + 4]):
            for i, a in enumerate(ids):
                if (i + k + session) % 7 == 0:
                    continue  # a student who skipped this one
                rows.append({"ts": t0 + pd.Timedelta(minutes=12 * k + (i * 7) % 11),
                             "account_id": a, "ip": f"198.51.100.{10 + i % 40}",
                             "prompt": f"Solve this step by step and explain each step: {problem}"})
    cls = pd.DataFrame(rows)
    template = ex.iloc[[0] * len(cls)].reset_index(drop=True)
    cls = template.assign(exchange_id=[f"ex_class{i:05d}" for i in range(len(cls))],
                          ts=cls["ts"].to_numpy(), account_id=cls["account_id"],
                          prompt=cls["prompt"], ip=cls["ip"], asn=64500, org_id=None,
                          api_key_id=[f"key_{a}" for a in cls["account_id"]],
                          model="atlas-3", system_prompt=None, n_messages=1,
                          tool_names=[[] for _ in range(len(cls))], has_image=False,
                          thinking=False, input_tokens=60, output_tokens=450)
    (out / "exchanges").mkdir(parents=True)
    pd.concat([ex, cls], ignore_index=True).to_parquet(out / "exchanges" / "all.parquet")
    pd.concat([accounts, acc], ignore_index=True).to_parquet(out / "accounts.parquet")
    return set(ids)


def test_a_class_doing_the_same_homework_is_not_a_campaign(scenario: Path,
                                                           tmp_path: Path) -> None:
    """Coordinated on every key (sign-up burst, one campus network and domain, the same
    prompts in the same hour) and asking for step-by-step reasoning like a CoT harvester:
    what sets a class apart is that its members ask the same questions at once."""
    students = _with_classroom(scenario, tmp_path / "sim")
    run_detection([tmp_path / "sim" / "exchanges"], tmp_path / "run", config.load(),
                  accounts=[tmp_path / "sim" / "accounts.parquet"],
                  releases=[scenario / "releases.parquet"])
    acc = pd.read_parquet(tmp_path / "run" / "accounts.parquet").set_index("account_id")
    assert not acc.loc[sorted(students), "flagged"].any()
    det = evaluate_run(scenario / "truth.parquet", tmp_path / "run")["systems"]["detector"]
    assert det["precision"] >= 0.97
    found = det["recall_by_operator"]
    assert all(found[op]["recall"] == 1.0 for op in ("cot-harvester", "hydra-harvester",
                                                     "coding-harvester"))


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
