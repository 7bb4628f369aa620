"""`distillguard eval`: metrics on hand-made fixtures with answers worked out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from typer.testing import CliRunner

from distillguard import baselines, config, evaluate
from distillguard.cli import app
from distillguard.engine.duckdb_engine import connect
from distillguard.errors import InputError
from distillguard.evaluate import (
    BASELINE_CAMPAIGN,
    DETECTOR,
    IFOREST,
    VOLUME,
    evaluate_run,
    render_table,
    top_capability,
)
from distillguard.ingest import load_inputs

T0 = datetime(2026, 3, 1, tzinfo=UTC)
# Fewer trees than the default keep the tests quick; the forest's behaviour is the same.
FAST = config.load()
FAST["eval"]["iforest_n_estimators"] = 50

# account -> (operator, population, flagged, campaign_id, exchanges sent)
FIXTURE = {
    "a1": ("opA", "campA", True, "C1", 10),
    "a2": ("opA", "campA", True, "C1", 10),
    "a3": ("opA", "campA", False, None, 10),
    "b1": ("opB", "campB", True, "C2", 5),
    "b2": ("opB", "campB", True, "C1", 5),
    "n1": (None, "devs", True, "C3", 3),
    "n2": (None, "devs", False, None, 3),
    "n3": (None, "devs", False, None, 3),
    "n4": (None, "devs", False, None, 3),
    "c1": (None, "consumer", False, None, 3),
    "c2": (None, "consumer", False, None, 3),
    # The contracted partner: an operator in truth, but allowlisted in the accounts table.
    "p1": ("partnerco", "partner", True, "C3", 3),
}
CAMPAIGNS = [
    {"campaign_id": "C1", "account_ids": ["a1", "a2", "b2"], "n_exchanges": 27,
     "capabilities": {"writing": 0.3, "agentic_tool_use": 0.7}},
    {"campaign_id": "C2", "account_ids": ["b1"], "n_exchanges": 5, "capabilities": {}},
    {"campaign_id": "C3", "account_ids": ["n1", "p1"], "n_exchanges": 6,
     "capabilities": {"chat_other": 1.0}},
]


def _exchanges(counts: dict[str, int], gap_s: int = 600) -> pa.Table:
    """Exchanges of each account, `gap_s` apart, ids unique across accounts."""
    rows = [(acc, i) for acc, n in counts.items() for i in range(n)]
    return pa.table({
        "exchange_id": [f"{acc}-{i}" for acc, i in rows],
        "ts": pa.array([T0 + timedelta(seconds=gap_s * i) for _, i in rows],
                       type=pa.timestamp("us", tz="UTC")),
        "account_id": [acc for acc, _ in rows],
        "prompt": ["hello"] * len(rows),
        "ip": [f"10.0.0.{i % 3}" for _, i in rows],
        "model": ["atlas-3"] * len(rows),
        "tool_names": pa.array([["search"] if i % 2 else [] for _, i in rows],
                               type=pa.list_(pa.string())),
        "input_tokens": [100] * len(rows),
        "output_tokens": [200] * len(rows),
    })


@pytest.fixture
def run(tmp_path: Path) -> dict[str, Path]:
    ids = list(FIXTURE)
    pq.write_table(pa.table({
        "account_id": ids,
        "operator": pa.array([FIXTURE[a][0] for a in ids], type=pa.string()),
        "population": [FIXTURE[a][1] for a in ids],
    }), tmp_path / "truth.parquet")
    pred = tmp_path / "pred"
    pred.mkdir()
    pq.write_table(pa.table({
        "account_id": ids,
        "score": [0.9 if FIXTURE[a][2] else 0.1 for a in ids],
        "flagged": [FIXTURE[a][2] for a in ids],
        "campaign_id": pa.array([FIXTURE[a][3] for a in ids], type=pa.string()),
        "reasons": pa.array([[] for _ in ids], type=pa.list_(pa.string())),
    }), pred / "accounts.parquet")
    (pred / "campaigns.json").write_text(json.dumps(CAMPAIGNS))
    pq.write_table(_exchanges({a: v[4] for a, v in FIXTURE.items()}),
                   tmp_path / "exchanges.parquet")
    pq.write_table(pa.table({"account_id": ids, "allowlisted": [a == "p1" for a in ids]}),
                   tmp_path / "accounts.parquet")
    return {"truth": tmp_path / "truth.parquet", "pred": pred,
            "exchanges": tmp_path / "exchanges.parquet", "accounts": tmp_path / "accounts.parquet"}


def test_detector_metrics_match_hand_computation(run: dict[str, Path]) -> None:
    result = evaluate_run(run["truth"], run["pred"], exchanges=[run["exchanges"]],
                          accounts=[run["accounts"]], cfg=FAST)
    det = result["systems"][DETECTOR]
    # Positives a1 a2 a3 b1 b2; flagged positives a1 a2 b1 b2; flagged negatives n1, p1.
    assert (det["tp"], det["fp"], det["fn"]) == (4, 2, 1)
    assert det["precision"] == pytest.approx(4 / 6)
    assert det["recall"] == pytest.approx(4 / 5)
    assert det["f1"] == pytest.approx(8 / 11)
    assert det["fpr_by_population"] == {
        "consumer": {"fpr": 0.0, "flagged": 0, "accounts": 2},
        "devs": {"fpr": 0.25, "flagged": 1, "accounts": 4},
        "partner": {"fpr": 1.0, "flagged": 1, "accounts": 1},
    }
    assert det["recall_by_operator"]["opA"]["recall"] == pytest.approx(2 / 3)
    assert det["recall_by_operator"]["opB"]["recall"] == 1.0
    assert "partnerco" not in det["recall_by_operator"]
    # Truth A A A B B vs campaigns C1 C1 {a3 alone} C2 C1:
    # sum C(n_ij,2) = 1, rows 3+1 = 4, columns 3, C(5,2) = 10 -> (1 - 1.2) / (3.5 - 1.2).
    assert det["ari"] == pytest.approx(-2 / 23)
    camp = det["campaigns_by_operator"]
    assert camp["opA"]["campaign_id"] == "C1"
    assert camp["opA"]["true_exchanges"] == 30
    assert camp["opA"]["exchange_error"] == pytest.approx(3 / 30)
    # Every other exchange of the fixture defines a tool: the classifier calls it agentic,
    # the rest ("hello") chat_other. opA: 15/15, tie -> earlier category; opB: 4 of 10.
    assert camp["opA"]["true_top_capability"] == "agentic_tool_use"
    assert camp["opA"]["capability_match"] is True
    assert camp["opB"]["true_top_capability"] == "chat_other"
    assert camp["opB"]["capability_match"] is False
    # opB: C1 and C2 each hold one of its accounts; the tie goes to the first id, C1.
    assert camp["opB"]["campaign_id"] == "C1"
    assert camp["opB"]["exchange_error"] == pytest.approx(17 / 10)


def test_allowlisted_operator_is_positive_without_accounts_table(run: dict[str, Path]) -> None:
    det = evaluate_run(run["truth"], run["pred"])["systems"][DETECTOR]
    assert (det["tp"], det["fp"], det["fn"]) == (5, 1, 1)
    assert det["campaigns_by_operator"]["opA"]["exchange_error"] is None
    assert list(evaluate_run(run["truth"], run["pred"])["systems"]) == [DETECTOR]


def test_unflagged_campaign_members_are_singletons(run: dict[str, Path], tmp_path: Path) -> None:
    # Unflag a2 but leave its campaign id: it must no longer be grouped with a1.
    table = pq.read_table(run["pred"] / "accounts.parquet").to_pylist()
    for r in table:
        r["flagged"] = r["flagged"] and r["account_id"] != "a2"
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(
        run["pred"] / "accounts.parquet")), run["pred"] / "accounts.parquet")
    det = evaluate_run(run["truth"], run["pred"], accounts=[run["accounts"]])
    # Truth A A A B B vs C1 {a2} {a3} C2 C1: one pair together (a1, b2) in different truth.
    assert det["systems"][DETECTOR]["ari"] == pytest.approx((0 - 4 * 1 / 10) / (2.5 - 0.4))


def test_top_capability_breaks_ties_by_contract_order() -> None:
    assert top_capability({"writing": 0.5, "coding": 0.5}) == "coding"
    assert top_capability({}) is None


def test_baselines_run_in_the_same_eval_and_table_has_every_system(
        run: dict[str, Path]) -> None:
    result = evaluate_run(run["truth"], run["pred"], exchanges=[run["exchanges"]],
                          accounts=[run["accounts"]], cfg=FAST)
    assert list(result["systems"]) == [DETECTOR, VOLUME, IFOREST]
    vol = result["systems"][VOLUME]
    # 12 accounts; the 0.99 quantile of counts is 10, and nobody sends more than 10.
    assert vol["flagged"] == 0 and vol["precision"] is None and vol["recall"] == 0.0
    table = render_table(result)
    assert [c.header for c in table.columns] == ["metric", DETECTOR, VOLUME, IFOREST]


def test_pred_may_be_omitted_only_with_exchanges(run: dict[str, Path]) -> None:
    result = evaluate_run(run["truth"], exchanges=[run["exchanges"]], cfg=FAST)
    assert list(result["systems"]) == [VOLUME, IFOREST]
    with pytest.raises(InputError):
        evaluate_run(run["truth"])


def test_missing_prediction_file_is_an_input_error(run: dict[str, Path]) -> None:
    (run["pred"] / "campaigns.json").unlink()
    with pytest.raises(InputError, match=r"campaigns\.json"):
        evaluate_run(run["truth"], run["pred"])


def _outlier_exchanges(tmp_path: Path) -> tuple[Path, Path]:
    """100 quiet accounts and one that sends 100 times as much, much faster."""
    counts = {f"u{i:03d}": 5 for i in range(100)}
    quiet = _exchanges(counts)
    loud = _exchanges({"loud": 500}, gap_s=7)
    pq.write_table(pa.concat_tables([quiet, loud]), tmp_path / "ex.parquet")
    ids = [*counts, "loud"]
    pq.write_table(pa.table({
        "account_id": ids,
        "operator": pa.array([None] * 100 + ["op"], type=pa.string()),
        "population": ["benign"] * 100 + ["attack"],
    }), tmp_path / "truth.parquet")
    return tmp_path / "ex.parquet", tmp_path / "truth.parquet"


def test_both_baselines_flag_the_volume_outlier(tmp_path: Path) -> None:
    ex, truth = _outlier_exchanges(tmp_path)
    result = evaluate_run(truth, exchanges=[ex], cfg=FAST)
    for name in (VOLUME, IFOREST):
        s = result["systems"][name]
        assert s["recall"] == 1.0, name
        assert s["fpr_by_population"]["benign"]["flagged"] <= 1, name
        assert s["campaigns_by_operator"]["op"]["campaign_id"] == BASELINE_CAMPAIGN
    vol = result["systems"][VOLUME]
    assert (vol["tp"], vol["fp"]) == (1, 0)
    assert vol["campaigns_by_operator"]["op"]["exchange_error"] == 0.0


def test_features_are_one_row_per_account(tmp_path: Path) -> None:
    ex, _ = _outlier_exchanges(tmp_path)
    con = connect()
    load_inputs(con, exchanges=[ex])
    baselines.build_features(con)
    rows = {r[0]: r[1:] for r in con.execute(
        "SELECT account_id, n_exchanges, gap_mean_s, distinct_ips, tool_share, hour_entropy "
        "FROM baseline_features").fetchall()}
    assert len(rows) == 101
    n, gap, ips, tools, entropy = rows["u000"]
    assert (n, gap, ips) == (5, 600.0, 3)
    assert tools == pytest.approx(2 / 5)
    assert entropy == pytest.approx(0.0)  # five exchanges within one hour
    flags = baselines.isolation_forest(con, FAST["eval"])
    assert flags.column("flagged").to_pylist()[flags.column("account_id").to_pylist()
                                               .index("loud")]


def test_gaps_of_tied_timestamps_are_zero_in_any_order(tmp_path: Path) -> None:
    # Two exchanges at one instant, then 60 s and 180 s after it: gaps 0, 60 and 120,
    # whichever of the tied pair comes first (the window orders by time alone).
    ex = _exchanges({"a": 4})
    at = [T0 + timedelta(seconds=s) for s in (0, 0, 60, 180)]
    pq.write_table(ex.set_column(ex.schema.get_field_index("ts"), "ts",
                                 pa.array(at, type=pa.timestamp("us", tz="UTC"))),
                   tmp_path / "ex.parquet")
    con = connect()
    load_inputs(con, exchanges=[tmp_path / "ex.parquet"])
    baselines.build_features(con)
    mean, sd = con.execute("SELECT gap_mean_s, gap_sd_s FROM baseline_features").fetchall()[0]
    assert (mean, sd) == (pytest.approx(60.0), pytest.approx(60.0))


def test_cli_prints_table_and_writes_json(run: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "metrics.json"
    res = CliRunner().invoke(app, [
        "eval", "--truth", str(run["truth"]), "--pred", str(run["pred"]),
        "--exchanges", str(run["exchanges"]), "--accounts", str(run["accounts"]),
        "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "precision" in res.output and VOLUME in res.output
    saved = json.loads(out.read_text())
    assert saved["systems"][DETECTOR]["tp"] == 4


def test_cli_names_the_memory_setting_when_the_engine_runs_out(
        run: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def out_of_memory(*_: object, **__: object) -> None:
        raise duckdb.OutOfMemoryException("Out of Memory Error: could not allocate block")

    monkeypatch.setattr(evaluate, "evaluate_run", out_of_memory)
    res = CliRunner().invoke(app, ["eval", "--truth", str(run["truth"]),
                                   "--pred", str(run["pred"])])
    assert res.exit_code == 3
    assert "out of memory" in res.output and "[engine] memory_limit" in res.output
    assert "Traceback" not in res.output


def test_cli_names_the_spill_directory_when_the_disk_is_full(
        run: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def disk_full(*_: object, **__: object) -> None:
        raise duckdb.IOException('IO Error: Could not write file "/tmp/distillguard-spill/'
                                 'duckdb_temp_1.tmp": No space left on device')

    monkeypatch.setattr(evaluate, "evaluate_run", disk_full)
    res = CliRunner().invoke(app, ["eval", "--truth", str(run["truth"]),
                                   "--pred", str(run["pred"])])
    assert res.exit_code == 3
    assert "out of disk space" in res.output and "TMPDIR" in res.output
    assert "distillguard-spill" in res.output and "Traceback" not in res.output


def test_cli_bad_input_exits_2(run: dict[str, Path], tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["eval", "--truth", str(tmp_path / "nope.parquet"),
                                   "--pred", str(run["pred"])])
    assert res.exit_code == 2
    assert "truth file not found" in res.output


@pytest.fixture(scope="module")
def small_sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from distillguard.simulate import generate

    out = tmp_path_factory.mktemp("small")
    return out, generate("small", seed=1, scale=0.03, out=out)


def test_baselines_on_simulated_small(small_sim: tuple[Path, dict]) -> None:
    out, summary = small_sim
    result = evaluate_run(out / "truth.parquet", exchanges=[out / "exchanges"],
                          accounts=[out / "accounts.parquet"], cfg=FAST)
    Console(width=140).print(render_table(result))
    assert result["attacking_accounts"] == summary["attacking_accounts"]
    benign = {p for p, v in summary["by_population"].items() if v["operator"] is None}
    operators = {v["operator"] for v in summary["by_population"].values()} - {None}
    for name in (VOLUME, IFOREST):
        s = result["systems"][name]
        assert set(s["fpr_by_population"]) == benign
        assert set(s["recall_by_operator"]) == operators
        true = [m["true_exchanges"] for m in s["campaigns_by_operator"].values()]
        assert sum(true) == summary["attacking_exchanges"]
        assert 0 < s["flagged"] <= 0.05 * result["accounts"]


@pytest.mark.parametrize("damage, message", [
    ("truth_dupe", "appears twice"),
    ("truth_column", "missing truth column"),
    ("campaigns_object", "JSON array"),
    ("campaign_key", "lacks 'n_exchanges'"),
    ("accounts_garbage", "not a readable Parquet"),
])
def test_bad_inputs_name_the_problem(run: dict[str, Path], damage: str, message: str) -> None:
    if damage == "truth_dupe":
        t = pq.read_table(run["truth"])
        pq.write_table(pa.concat_tables([t, t.slice(0, 1)]), run["truth"])
    elif damage == "truth_column":
        pq.write_table(pq.read_table(run["truth"]).drop(["population"]), run["truth"])
    elif damage == "campaigns_object":
        (run["pred"] / "campaigns.json").write_text("{}")
    elif damage == "campaign_key":
        (run["pred"] / "campaigns.json").write_text('[{"campaign_id": "C1", "account_ids": []}]')
    else:
        (run["pred"] / "accounts.parquet").write_bytes(b"not parquet")
    with pytest.raises(InputError, match=message):
        evaluate_run(run["truth"], run["pred"])
