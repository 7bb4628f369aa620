"""The traffic simulator: contract conformance, determinism, realism checks, CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import SHARED_PROMPTS
from distillguard.cli import app
from distillguard.contract import ACCOUNTS, CAPABILITIES, EXCHANGES, RELEASES, TRUTH_COLUMNS, Kind
from distillguard.simulate import SCENARIOS, generate, scenarios
from distillguard.simulate.grammar import load

REPO = Path(__file__).resolve().parents[1]
ARROW = {Kind.STRING: pa.string(), Kind.INT: pa.int64(), Kind.BOOL: pa.bool_(),
         Kind.TIMESTAMP: pa.timestamp("us", tz="UTC"), Kind.STRING_LIST: pa.list_(pa.string())}


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("sim") / "small"
    return out, generate("small", seed=7, scale=0.25, out=out)


@pytest.fixture(scope="module")
def con(sim: tuple[Path, dict[str, Any]]) -> duckdb.DuckDBPyConnection:
    out, _ = sim
    c = duckdb.connect()
    c.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{out}/exchanges/*.parquet')")
    for name in ("accounts", "truth", "releases"):
        c.execute(f"CREATE VIEW {name} AS SELECT * FROM '{out}/{name}.parquet'")
    return c


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    return con.execute(sql).fetchall()[0][0]


def test_files_follow_the_contract(sim: tuple[Path, dict[str, Any]]) -> None:
    out, summary = sim
    parts = sorted((out / "exchanges").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(len(parts))]
    assert len(parts) == summary["parts"] == 14
    schema = ds.dataset(out / "exchanges").schema
    assert set(EXCHANGES.required) <= set(schema.names) <= set(EXCHANGES.names)
    for name in schema.names:
        assert schema.field(name).type == ARROW[EXCHANGES.column(name).kind], name
    for table, path in ((ACCOUNTS, "accounts.parquet"), (RELEASES, "releases.parquet")):
        got = pq.read_schema(out / path)
        assert got.names == table.names
        for name in got.names:
            assert got.field(name).type == ARROW[table.column(name).kind], (path, name)
    assert pq.read_schema(out / "truth.parquet").names == list(TRUTH_COLUMNS)


def test_counts_categories_and_truth_coverage(sim: tuple[Path, dict[str, Any]],
                                              con: duckdb.DuckDBPyConnection) -> None:
    _, summary = sim
    assert _one(con, "SELECT count(*) FROM e") == summary["exchanges"] > 30_000
    assert _one(con, "SELECT count(DISTINCT exchange_id) = count(*) FROM e")
    assert all(summary["by_capability"][c] > 0 for c in CAPABILITIES)
    # every account in the exchanges has truth and an accounts row, and none is duplicated
    assert _one(con, "SELECT count(*) FROM (SELECT DISTINCT account_id FROM e) "
                     "ANTI JOIN truth USING (account_id)") == 0
    assert _one(con, "SELECT count(*) FROM (SELECT DISTINCT account_id FROM e) "
                     "ANTI JOIN accounts USING (account_id)") == 0
    assert _one(con, "SELECT count(*) = count(DISTINCT account_id) FROM truth")
    # every operator has attacking accounts; benign rows have a null operator
    ops = {r[0] for r in con.execute("SELECT DISTINCT operator FROM truth").fetchall()}
    assert ops == {None, "cot-harvester", "hydra-harvester", "coding-harvester",
                   "low-slow-evader", "reseller-distiller"}
    # accounts exist before they send anything
    assert _one(con, "SELECT count(*) FROM (SELECT account_id, min(ts) m FROM e GROUP BY 1) "
                     "JOIN accounts USING (account_id) WHERE created_at > m") == 0
    # request features are filled: images, tools, thinking, errors, system prompts
    assert _one(con, "SELECT count(*) FROM e WHERE has_image") > 0
    assert _one(con, "SELECT count(*) FROM e WHERE len(tool_names) > 0") > 0
    assert _one(con, "SELECT count(*) FROM e WHERE thinking") > 0
    assert _one(con, "SELECT count(DISTINCT status) FROM e") == 3
    assert _one(con, "SELECT count(*) FROM e WHERE system_prompt IS NOT NULL") > 0
    assert _one(con, "SELECT min(n_messages) FROM e") >= 1


def test_ids_are_opaque_and_order_reveals_nothing(con: duckdb.DuckDBPyConnection) -> None:
    ids = [r[0] for r in con.execute("SELECT account_id FROM accounts").fetchall()]
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"acct_[0-9a-f]{16}", i) for i in ids)
    truth_ids = [r[0] for r in con.execute("SELECT account_id FROM truth").fetchall()]
    assert truth_ids == ids
    assert _one(con, "SELECT bool_and(regexp_full_match(exchange_id, 'ex_[0-9a-f]{16}')) FROM e")


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate("evasive", seed=11, scale=0.05, out=a)
    generate("evasive", seed=11, scale=0.05, out=b)
    generate("evasive", seed=12, scale=0.05, out=c)
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    assert len(files) > 4
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "truth.parquet").read_bytes() != (c / "truth.parquet").read_bytes()


def test_allowlisted_partner_is_flagged(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("SELECT population, operator, count(*) FROM accounts "
                       "JOIN truth USING (account_id) WHERE allowlisted GROUP BY ALL").fetchall()
    assert len(rows) == 1
    assert rows[0][0] == "synthetic_data_partner" and rows[0][1] is None and rows[0][2] >= 1


def test_release_exists_and_coding_harvester_pivots(con: duckdb.DuckDBPyConnection) -> None:
    released = _one(con, "SELECT released_at FROM releases WHERE model = 'atlas-4'")
    assert _one(con, "SELECT min(ts) FROM e") < released < _one(con, "SELECT max(ts) FROM e")
    assert _one(con, f"SELECT count(*) FROM e WHERE model = 'atlas-4' "
                     f"AND ts < '{released}'::TIMESTAMPTZ") == 0
    share = {p: (first, later) for p, first, later in con.execute(f"""
        SELECT population,
          avg((model = 'atlas-4')::INT) FILTER (WHERE ts BETWEEN '{released}'::TIMESTAMPTZ
                AND '{released}'::TIMESTAMPTZ + INTERVAL 24 HOUR),
          avg((model = 'atlas-4')::INT) FILTER (WHERE ts > '{released}'::TIMESTAMPTZ
                + INTERVAL 24 HOUR)
        FROM e JOIN truth USING (account_id) GROUP BY 1""").fetchall()}
    first, later = share["coding_harvester"]
    assert first > 0.25 and 0.4 < later < 0.6      # ~half its traffic moves within a day
    assert share["casual"][0] < 0.08 and share["solo_developer"][0] < 0.08


def test_attacker_volume_is_inside_the_benign_range(con: duckdb.DuckDBPyConnection) -> None:
    q = {att: (med, p95) for att, med, p95 in con.execute("""
        WITH d AS (SELECT account_id, date_trunc('day', ts) AS day, count(*) AS n
                   FROM e GROUP BY ALL)
        SELECT operator IS NOT NULL, median(n), quantile_cont(n, 0.95)
        FROM d JOIN truth USING (account_id) GROUP BY 1""").fetchall()}
    attacker_median, benign_p95 = q[True][0], q[False][1]
    assert attacker_median < benign_p95
    assert 10 <= attacker_median <= 45      # the public case: ~26 exchanges per account-day


COLUMNS_E = ("asn", "user_agent", "country", "model", "ip", "system_prompt")
COLUMNS_A = ("email_domain", "payment_fingerprint", "signup_asn", "signup_ip", "country",
             "verification_path", "org_id")


@pytest.mark.parametrize("source,column", [("e", c) for c in COLUMNS_E]
                         + [("accounts", c) for c in COLUMNS_A])
def test_no_single_column_separates_attackers(con: duckdb.DuckDBPyConnection, source: str,
                                              column: str) -> None:
    """Shared values (>= 5 accounts) that are >= 95% attacker cover under half the attackers."""
    covered = _one(con, f"""
        WITH m AS (SELECT account_id, mode({column}) AS v FROM {source} GROUP BY 1),
        j AS (SELECT m.v, operator IS NOT NULL AS att FROM m JOIN truth USING (account_id)),
        p AS (SELECT v, count(*) AS n, avg(att::INT) AS prec FROM j GROUP BY 1)
        SELECT coalesce(sum(att::INT) FILTER (WHERE prec >= 0.95 AND n >= 5), 0)
               / sum(att::INT) FROM j JOIN p USING (v)""")
    assert covered < 0.5


@pytest.mark.parametrize("column", ["asn", "user_agent", "country"])
def test_no_common_attacker_value_is_attacker_only(con: duckdb.DuckDBPyConnection,
                                                   column: str) -> None:
    only = con.execute(f"""
        SELECT {column}, count(*) FILTER (WHERE operator IS NOT NULL) AS att,
               count(*) FILTER (WHERE operator IS NULL) AS ben
        FROM e JOIN truth USING (account_id) GROUP BY 1
        HAVING att >= 0.01 * (SELECT count(*) FROM e JOIN truth USING (account_id)
                              WHERE operator IS NOT NULL) AND ben = 0""").fetchall()
    assert only == []


def test_benign_confounders_share_infrastructure(con: duckdb.DuckDBPyConnection) -> None:
    campus = con.execute("""
        SELECT count(DISTINCT account_id), count(DISTINCT email_domain),
               count(DISTINCT regexp_replace(signup_ip, '\\.[0-9]+$', ''))
        FROM accounts JOIN truth USING (account_id) WHERE population = 'university_lab'
          AND verification_path IN ('education', 'research')""").fetchall()[0]
    assert campus[0] >= 5 and campus[1] == 1 and campus[2] <= 3
    # carrier-grade NAT: a few mobile addresses carry most rows, each shared by many users
    nat = con.execute("""
        SELECT ip, count(DISTINCT account_id) AS users, count(*) AS n
        FROM e JOIN truth USING (account_id) WHERE population = 'cgnat_mobile'
        GROUP BY 1 ORDER BY n DESC""").fetchall()
    users = _one(con, "SELECT count(*) FROM truth WHERE population = 'cgnat_mobile'")
    top = nat[:6]  # two NAT groups of three addresses
    assert sum(r[2] for r in top) > 0.7 * sum(r[2] for r in nat)
    assert all(r[1] > users / 10 for r in top)
    # the reseller's pool mixes customers and a distiller under one org
    pools = con.execute("""
        SELECT org_id, count(DISTINCT operator), count(*) FILTER (WHERE operator IS NULL)
        FROM accounts JOIN truth USING (account_id)
        WHERE population IN ('reseller_customer', 'reseller_distiller') GROUP BY 1""").fetchall()
    assert any(n_ops == 1 and customers > 0 for _, n_ops, customers in pools)


def test_grammar_has_hundreds_of_templates_per_category() -> None:
    g = load()
    for c in CAPABILITIES:
        assert g.template_count("organic", c) + g.template_count("distill", c) >= 200, c
    assert sum(len(v) for v in g.slots.values()) >= 800


def test_package_ships_no_shared_prompt_text(con: duckdb.DuckDBPyConnection) -> None:
    if not SHARED_PROMPTS.is_dir():
        pytest.skip("shared prompt test set not present")
    grammar_text = (REPO / "src/distillguard/simulate/grammar.json").read_text("utf-8")
    texts = set()
    for path in SHARED_PROMPTS.glob("*.jsonl"):
        for line in filter(None, path.read_text("utf-8").split("\n")):
            text = json.loads(line).get("text") or ""
            if len(text) >= 40:
                texts.add(text)
    assert texts
    assert not [t for t in texts if t in grammar_text]
    generated = {r[0] for r in con.execute("SELECT DISTINCT prompt FROM e").fetchall()}
    assert not texts & generated


def test_scenario_table() -> None:
    scenarios.check()
    big = SCENARIOS["alibaba-scale"]
    attackers = [c for c in big.cohorts if c.population in (
        "cot_reward_harvester", "agentic_hydra", "coding_harvester", "low_slow_evader",
        "reseller_distiller")]
    assert sum(c.accounts for c in attackers) == 25_000
    assert sum(c.exchanges for c in attackers) == pytest.approx(28.8e6)
    assert big.days == 45 and 0 < big.release_day < big.days
    scaled = SCENARIOS["small"].scaled(0.1)
    assert all(c.accounts >= 1 and c.groups <= c.accounts for c in scaled.cohorts)


def test_simulated_files_pass_validation(sim: tuple[Path, dict[str, Any]]) -> None:
    from distillguard.engine.duckdb_engine import connect
    from distillguard.ingest import load_inputs

    out, summary = sim
    report = load_inputs(connect(":memory:"), exchanges=[out / "exchanges"],
                         accounts=[out / "accounts.parquet"],
                         releases=[out / "releases.parquet"])
    assert report.rows_quarantined == 0
    assert report.rows_read == summary["exchanges"] + summary["accounts"] + 4


def test_cli_simulate(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["simulate", "--scenario", "small", "--seed", "1", "--scale",
                              "0.02", "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "coding_harvester" in res.output
    for name in ("accounts.parquet", "truth.parquet", "releases.parquet"):
        assert (tmp_path / "o" / name).is_file()
    bad = runner.invoke(app, ["simulate", "--scenario", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown scenario" in bad.output
    neg = runner.invoke(app, ["simulate", "--scale", "0", "--out", str(tmp_path / "y")])
    assert neg.exit_code == 2


def _write_corpus(folder: Path, rows: list[dict[str, Any]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    return folder


def test_real_prompts_replace_the_grammar_text(tmp_path: Path) -> None:
    """With a corpus, campaigns send its distillation prompts of their capabilities and
    ordinary traffic its organic ones; a capability the corpus has too few of comes from
    the grammar; the same corpus and seed give the same files."""
    math = [f"A farmer has {i} hens and buys {i + 3} more. How many hens now?" for i in range(80)]
    qa = [f"What is the capital of country number {i}?" for i in range(80)]
    few = [f"Rate answer {i} on a 1-10 scale." for i in range(5)]
    folder = _write_corpus(tmp_path / "corpus", [
        *({"text": t, "kind": "distillation", "category": "math"} for t in math),
        *({"text": t, "kind": "organic", "category": "qa"} for t in qa),
        *({"text": t, "kind": "distillation", "category": "grading"} for t in few)])
    summary = generate("small", seed=3, scale=0.05, out=tmp_path / "a", prompts_dir=folder)
    generate("small", seed=3, scale=0.05, out=tmp_path / "b", prompts_dir=folder)
    assert summary["prompts"] == str(folder)
    parts = sorted((tmp_path / "a" / "exchanges").glob("*.parquet"))
    assert [p.read_bytes() for p in parts] == [
        p.read_bytes() for p in sorted((tmp_path / "b" / "exchanges").glob("*.parquet"))]
    c = duckdb.connect()
    c.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{tmp_path}/a/exchanges/*.parquet')")
    c.execute(f"CREATE VIEW truth AS SELECT * FROM '{tmp_path}/a/truth.parquet'")
    sent = c.execute("SELECT t.population, e.prompt FROM e JOIN truth t USING (account_id)"
                     ).fetchall()
    by_pop: dict[str, set[str]] = {}
    for pop, prompt in sent:
        by_pop.setdefault(pop, set()).add(prompt)
    assert by_pop["cot_reward_harvester"] & set(math)
    assert not by_pop["casual"] & set(math)
    assert by_pop["casual"] & set(qa)
    assert not {p for ps in by_pop.values() for p in ps} & set(few)


def test_bad_prompt_corpus_names_the_file_row_and_field(tmp_path: Path) -> None:
    folder = _write_corpus(tmp_path / "corpus", [
        {"text": "fine", "kind": "organic", "category": "qa"},
        {"text": "odd", "kind": "scraped", "category": "qa"}])
    res = CliRunner().invoke(app, ["simulate", "--scale", "0.02", "--out", str(tmp_path / "o"),
                                   "--prompts", str(folder)])
    assert res.exit_code == 2
    assert "prompts.jsonl" in res.output and "row 2" in res.output and "'kind'" in res.output
    empty = CliRunner().invoke(app, ["simulate", "--scale", "0.02", "--out",
                                     str(tmp_path / "p"), "--prompts", str(tmp_path)])
    assert empty.exit_code == 2 and "no *.jsonl" in empty.output
