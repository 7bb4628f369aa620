"""One pipeline, two engines: detect on DuckDB and on Spark `local[2]` must flag the same
accounts and form the same campaigns (issue 5). Also the Spark ingest's typing and
quarantine rules, and the engine-independent hash.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark", reason="needs the 'spark' extra (pyspark)")
if shutil.which("java") is None:
    pytest.skip("needs Java 17 for Spark (no `java` on PATH)", allow_module_level=True)

from distillguard import config
from distillguard.engine.portable import stable_hash
from distillguard.engine.spark_engine import (
    SparkEngineSession,
    load_inputs_spark,
    run_detection_spark,
    spark_session,
)
from distillguard.pipeline import run_detection
from distillguard.simulate import generate

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark():
    return spark_session("local[2]")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim")
    generate("small", 7, 0.1, out)
    return out


def _flagged(run: Path) -> tuple[list[str], list[list[str]]]:
    acc = pd.read_parquet(run / "accounts.parquet")
    camps = json.loads((run / "campaigns.json").read_text())
    return (sorted(acc.loc[acc["flagged"], "account_id"]),
            sorted(sorted(c["account_ids"]) for c in camps))


def test_detect_parity(spark, scenario: Path, tmp_path: Path) -> None:
    # Template ids, family keys and the linking order all use `stable_hash`, which is
    # the same function on both engines (Ibis' own `hash()` is not).
    cfg = config.load()
    inputs = dict(accounts=[scenario / "accounts.parquet"],
                  releases=[scenario / "releases.parquet"])
    duck = run_detection([scenario / "exchanges"], tmp_path / "duck", cfg, **inputs)
    spk = run_detection_spark([scenario / "exchanges"], tmp_path / "spark", cfg, spark=spark,
                              **inputs)
    assert duck["flagged"] > 0, "the scenario must flag someone for parity to mean anything"
    assert _flagged(tmp_path / "spark") == _flagged(tmp_path / "duck")
    assert spk["accounts"] == duck["accounts"]
    run = json.loads((tmp_path / "spark" / "run.json").read_text())
    assert run["engine"] == "spark"
    assert run["counts"]["exchanges_read"] == duck["ingest"].tables["exchanges"].rows_read


def test_spark_ingest_types_and_quarantine(spark, tmp_path: Path) -> None:
    rows = pa.table({
        "exchange_id": ["a", "b", "b", "c", "d", "e"],
        "ts": ["2026-01-01T00:00:00Z", "1767225600000", "2026-01-02", "not a time",
               "2026-01-03", "2026-01-04"],
        "account_id": ["x", "y", "y", "z", "", "w"],
        "prompt": ["hi", None, "dup", "p", "q", "r"],
        "asn": ["13335", "4.0", None, "x", None, None],
        "ip": ["10.0.0.1", "::1", None, None, None, "999.1.1.1"],
    })
    pq.write_table(rows, tmp_path / "ex.parquet")
    rep = load_inputs_spark(spark, exchanges=[tmp_path / "ex.parquet"])
    t = rep.tables["exchanges"]
    assert (t.rows_read, t.rows_accepted, t.rows_quarantined) == (6, 2, 4)
    assert "model" not in t.columns_present and "asn" in t.columns_present
    reasons = {(c, r) for _, c, r, _ in rep.reasons}
    assert ("ts", "unparseable timestamp") in reasons
    assert ("account_id", "missing account_id") in reasons
    assert ("ip", "invalid IP address") in reasons
    assert any(r.startswith("duplicate exchange_id (first at file") for _, r in reasons)
    ex = SparkEngineSession(spark).pandas(SparkEngineSession(spark).table("exchanges")
                                          .order_by("exchange_id"))
    assert list(ex["exchange_id"]) == ["a", "b"]
    assert list(ex["asn"]) == [13335, 4]
    assert list(ex["ts"]) == [pd.Timestamp("2026-01-01")] * 2
    assert ex["model"].isna().all()  # absent optional column: typed NULL


def test_stable_hash_same_on_both_engines(spark) -> None:
    import duckdb

    from distillguard.engine.session import DuckDBSession

    df = pd.DataFrame({"s": ["template one", "", None, "ünïcode words here", "x" * 300]})
    got = []
    for sess in (DuckDBSession(duckdb.connect()), SparkEngineSession(spark)):
        t = sess.register("hash_probe", df)
        got.append(sess.pandas(t.select(h=stable_hash(t.s),
                                        w=t.s.split(" ").map(lambda w: stable_hash(w) % 97))))
    assert got[0]["h"].equals(got[1]["h"])
    assert got[0]["w"].map(lambda v: None if v is None else list(v)).tolist() == \
        got[1]["w"].map(lambda v: None if v is None else list(v)).tolist()
    assert got[0]["h"].iloc[0] != got[0]["h"].iloc[1]
