"""Metrics of a detection run against simulator truth, with naive baselines side by side.

Every system (the detector's run, each baseline) is reduced to one `Prediction`: which
accounts are flagged, which campaign each flagged account is in, and the campaigns. One
scoring function then measures them all the same way, so the columns are comparable.
Definitions of every metric are in docs/evaluation.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rich.table import Table
from sklearn.metrics import adjusted_rand_score

from distillguard import baselines, config
from distillguard.contract import CAPABILITIES, TRUTH_COLUMNS
from distillguard.engine.duckdb_engine import connect
from distillguard.errors import InputError
from distillguard.ingest import load_inputs

DETECTOR = "detector"
VOLUME = "volume_p99"
IFOREST = "iforest"
# The single pseudo-campaign a baseline puts all its flagged accounts in.
BASELINE_CAMPAIGN = "all-flagged"
# The columns of a run's accounts.parquet that the evaluation reads (score, reasons unused).
PRED_COLUMNS = ("account_id", "flagged", "campaign_id")


@dataclass(frozen=True)
class Campaign:
    """One campaign as the evaluation needs it."""

    campaign_id: str
    account_ids: list[str]
    n_exchanges: int
    top_capability: str | None


@dataclass(frozen=True)
class Prediction:
    """One system's decisions: `accounts` has account_id, flagged, campaign_id."""

    name: str
    accounts: pa.Table
    campaigns: list[Campaign]


def top_capability(capabilities: dict[str, float] | None) -> str | None:
    """The category with the largest share; ties go to the earlier contract category."""
    if not capabilities:
        return None
    order = {c: i for i, c in enumerate(CAPABILITIES)}
    return max(capabilities, key=lambda c: (capabilities[c], -order.get(c, len(order))))


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputError(f"not a readable Parquet file: {exc}", file=str(path)) from exc


def _load_truth(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    if not Path(path).is_file():
        raise InputError("truth file not found", file=str(path))
    table = _read_parquet(path)
    for col in TRUTH_COLUMNS:
        if col not in table.column_names:
            raise InputError("missing truth column", file=str(path), column=col)
    con.register("truth_raw", table.select(list(TRUTH_COLUMNS)))
    dupes = con.execute("SELECT account_id FROM truth_raw GROUP BY 1 HAVING count(*) > 1 "
                        "ORDER BY 1 LIMIT 1").fetchall()
    if dupes:
        raise InputError(f"account {dupes[0][0]!r} appears twice", file=str(path),
                         column="account_id")


def _build_truth(con: duckdb.DuckDBPyConnection) -> None:
    """`truth`: account_id, operator, population, positive (attacking and not allowlisted).

    Reads the ingested `accounts` view, which is empty when no accounts were given.
    """
    con.execute("""
        CREATE OR REPLACE TEMP TABLE truth AS
        SELECT t.account_id, t.operator, t.population,
               t.operator IS NOT NULL AND NOT coalesce(a.allowlisted, false) AS positive
        FROM truth_raw t LEFT JOIN accounts a USING (account_id)
    """)


def load_prediction(pred_dir: Path) -> Prediction:
    """Read a detection run's accounts.parquet and campaigns.json (the log contract)."""
    acc_path, camp_path = Path(pred_dir) / "accounts.parquet", Path(pred_dir) / "campaigns.json"
    for p in (acc_path, camp_path):
        if not p.is_file():
            raise InputError("detection output not found", file=str(p))
    table = _read_parquet(acc_path)
    for col in PRED_COLUMNS:
        if col not in table.column_names:
            raise InputError("missing column", file=str(acc_path), column=col)
    if pc.count_distinct(table.column("account_id")).as_py() != table.num_rows:
        raise InputError("an account appears twice", file=str(acc_path), column="account_id")
    try:
        raw = json.loads(camp_path.read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON: {exc}", file=str(camp_path)) from exc
    if not isinstance(raw, list):
        raise InputError("expected a JSON array of campaigns", file=str(camp_path))
    campaigns = []
    for i, c in enumerate(raw):
        if not isinstance(c, dict):
            raise InputError("campaign is not a JSON object", file=str(camp_path), row=i)
        missing = [k for k in ("campaign_id", "account_ids", "n_exchanges") if k not in c]
        if missing:
            raise InputError(f"campaign lacks {missing[0]!r}", file=str(camp_path), row=i)
        if not isinstance(c["n_exchanges"], int) or not isinstance(c["account_ids"], list):
            raise InputError("campaign n_exchanges must be an integer and account_ids a list",
                             file=str(camp_path), row=i)
        campaigns.append(Campaign(str(c["campaign_id"]), [str(a) for a in c["account_ids"]],
                                  c["n_exchanges"], top_capability(c.get("capabilities"))))
    try:
        accounts = table.select(list(PRED_COLUMNS)).cast(
            pa.schema([("account_id", pa.string()), ("flagged", pa.bool_()),
                       ("campaign_id", pa.string())]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"wrong column type: {exc}", file=str(acc_path)) from exc
    return Prediction(DETECTOR, accounts, campaigns)


def baseline_prediction(name: str, flags: pa.Table) -> Prediction:
    """Wrap a baseline's flags: all flagged accounts form one pseudo-campaign.

    Its exchange count is the flagged accounts' total; it reports no capabilities.
    """
    flagged = flags.filter(flags.column("flagged"))
    ids = flagged.column("account_id").to_pylist()
    n = pc.sum(flagged.column("n_exchanges")).as_py() or 0
    campaign_id = pc.if_else(flags.column("flagged"), BASELINE_CAMPAIGN, None)
    accounts = flags.select(["account_id", "flagged"]).append_column(
        "campaign_id", campaign_id.cast(pa.string()))
    campaigns = [Campaign(BASELINE_CAMPAIGN, ids, int(n), None)] if ids else []
    return Prediction(name, accounts, campaigns)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _ari(con: duckdb.DuckDBPyConnection) -> float | None:
    """ARI over attacking accounts; unflagged or campaign-less ones are each a singleton."""
    rows = con.execute("""
        SELECT operator, CASE WHEN flagged THEN campaign_id END
        FROM scored WHERE positive ORDER BY account_id
    """).fetchall()
    if not rows:
        return None
    truth = [r[0] for r in rows]
    pred = [r[1] if r[1] is not None else f"\x00singleton-{i}" for i, r in enumerate(rows)]
    return float(adjusted_rand_score(truth, pred))


def _operator_truth(con: duckdb.DuckDBPyConnection, with_exchanges: bool,
                    with_capability: bool) -> dict[str, dict[str, Any]]:
    """Per operator: true exchange count and top capability (None where not computable).

    The true top capability is the most common category of the operator's exchanges as
    labelled by the package's own classifier (`signals.capability`): the simulator writes
    no per-exchange capability, so this measures agreement with that classifier.
    """
    ops = [r[0] for r in con.execute(
        "SELECT DISTINCT operator FROM truth WHERE positive ORDER BY 1").fetchall()]
    counts: dict[str, int] = {}
    caps: dict[str, str] = {}
    if with_exchanges:
        counts = dict(con.execute("""
            SELECT operator, sum(n_exchanges)::BIGINT
            FROM baseline_features JOIN truth USING (account_id)
            WHERE positive GROUP BY operator""").fetchall())
    if with_exchanges and with_capability:
        caps = _operator_capabilities(con)
    return {op: {"exchanges": counts.get(op), "top_capability": caps.get(op)} for op in ops}


def _operator_capabilities(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    from distillguard.engine.session import DuckDBSession
    from distillguard.signals.capability import capability

    session = DuckDBSession(con)
    ex = session.table("exchanges")
    truth = session.table("truth")
    joined = ex.join(truth.filter(truth.positive), "account_id")
    labelled = joined.select(operator=joined.operator, capability=capability(joined))
    session.materialize("_operator_caps", labelled.group_by(["operator", "capability"])
                        .aggregate(n=labelled.count()))
    rows = con.execute("""
        SELECT operator, capability FROM _operator_caps
        QUALIFY row_number() OVER (PARTITION BY operator
                                   ORDER BY n DESC, list_position(?, capability)) = 1
    """, [list(CAPABILITIES)]).fetchall()
    return dict(rows)


def _campaign_match(con: duckdb.DuckDBPyConnection, pred: Prediction,
                    operators: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per operator: its best campaign (largest account overlap) and how well it is described."""
    camp = {c.campaign_id: c for c in pred.campaigns}
    members = pa.table({
        "campaign_id": pa.array([c.campaign_id for c in pred.campaigns for _ in c.account_ids],
                                type=pa.string()),
        "account_id": pa.array([a for c in pred.campaigns for a in c.account_ids],
                               type=pa.string()),
    })
    con.register("_members", members)
    best = con.execute("""
        SELECT t.operator, m.campaign_id, count(*) AS overlap
        FROM truth t JOIN _members m USING (account_id)
        WHERE t.positive GROUP BY t.operator, m.campaign_id
        QUALIFY row_number() OVER (PARTITION BY t.operator
                                   ORDER BY count(*) DESC, m.campaign_id) = 1
    """).fetchall()
    con.unregister("_members")
    matched = {op: (cid, int(ov)) for op, cid, ov in best}
    out: dict[str, dict[str, Any]] = {}
    for op, true in operators.items():
        cid, overlap = matched.get(op, (None, 0))
        c = camp.get(cid) if cid is not None else None
        n_true, cap_true = true["exchanges"], true["top_capability"]
        err = abs(c.n_exchanges - n_true) / n_true if c is not None and n_true else None
        out[op] = {
            "campaign_id": cid,
            "overlap": overlap,
            "n_exchanges": c.n_exchanges if c else None,
            "true_exchanges": n_true,
            "exchange_error": err,
            "top_capability": c.top_capability if c else None,
            "true_top_capability": cap_true,
            "capability_match": (c.top_capability == cap_true
                                 if c is not None and c.top_capability and cap_true else None),
        }
    return out


def score(con: duckdb.DuckDBPyConnection, pred: Prediction,
          operators: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """All metrics of one system against `truth` (accounts absent from it count unflagged).

    `operators` is `_operator_truth`'s per-operator exchange count and top capability.
    """
    con.register("_pred", pred.accounts)
    con.execute("""
        CREATE OR REPLACE TEMP TABLE scored AS
        SELECT t.*, coalesce(p.flagged, false) AS flagged, p.campaign_id
        FROM truth t LEFT JOIN _pred p USING (account_id)
    """)
    unknown = con.execute("SELECT count(*) FROM _pred WHERE account_id NOT IN "
                          "(SELECT account_id FROM truth)").fetchall()[0][0]
    con.unregister("_pred")
    tp, fp, fn = con.execute("""
        SELECT count(*) FILTER (positive AND flagged), count(*) FILTER (NOT positive AND flagged),
               count(*) FILTER (positive AND NOT flagged)
        FROM scored
    """).fetchall()[0]
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)
          if precision is not None and recall is not None and precision + recall else None)
    fpr = {pop: {"fpr": _ratio(f, n), "flagged": f, "accounts": n}
           for pop, f, n in con.execute("""
               SELECT population, count(*) FILTER (flagged), count(*)
               FROM scored WHERE NOT positive GROUP BY 1 ORDER BY 1""").fetchall()}
    rec = {op: {"recall": _ratio(f, n), "flagged": f, "accounts": n}
           for op, f, n in con.execute("""
               SELECT operator, count(*) FILTER (flagged), count(*)
               FROM scored WHERE positive GROUP BY 1 ORDER BY 1""").fetchall()}
    return {
        "flagged": tp + fp, "tp": tp, "fp": fp, "fn": fn,
        "precision": precision, "recall": recall, "f1": f1,
        "ari": _ari(con),
        "fpr_by_population": fpr,
        "recall_by_operator": rec,
        "campaigns_by_operator": _campaign_match(con, pred, operators),
        "pred_accounts_not_in_truth": unknown,
    }


def _baselines(con: duckdb.DuckDBPyConnection, cfg: dict[str, Any]) -> list[Prediction]:
    """Both baselines over `baseline_features` (built by the caller)."""
    return [
        baseline_prediction(VOLUME, baselines.volume_threshold(con, cfg["volume_quantile"])),
        baseline_prediction(IFOREST, baselines.isolation_forest(con, cfg)),
    ]


def evaluate_run(truth_path: Path, pred_dir: Path | None = None,
                 exchanges: list[Path] | None = None, accounts: list[Path] | None = None,
                 cfg: dict[str, Any] | None = None,
                 progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Score a detection run and, when exchanges are given, both baselines, against truth.

    `progress` receives the name of each step as it starts (the CLI shows it).
    """
    if pred_dir is None and not exchanges:
        raise InputError("nothing to evaluate: give --pred, --exchanges, or both")
    cfg = cfg or config.load()
    ecfg = cfg["eval"]
    preds = [load_prediction(Path(pred_dir))] if pred_dir is not None else []
    con = connect(memory_limit=cfg["engine"]["memory_limit"])
    _load_truth(con, Path(truth_path))
    progress("validating inputs")
    report = load_inputs(con, exchanges=[Path(p) for p in exchanges or []] or None,
                         accounts=[Path(p) for p in accounts or []] or None,
                         max_prompt_bytes=cfg["ingest"]["max_prompt_bytes"],
                         batch_rows=cfg["ingest"]["batch_rows"])
    _build_truth(con)
    notes = [
        "positive = truth operator not null and account not allowlisted",
        "ARI over attacking accounts; unflagged or campaign-less accounts are singletons; "
        "a baseline puts all its flagged accounts in one campaign",
    ]
    notes += [f"{t.table}: {t.rows_quarantined} rows quarantined by ingest and ignored"
              for t in report.tables.values() if t.rows_quarantined]
    if exchanges:
        progress("per-account aggregates")
        baselines.build_features(con)
        if not con.execute("SELECT count(*) FROM baseline_features").fetchall()[0][0]:
            raise InputError("exchanges input holds no rows")
        if pred_dir is not None:
            notes.append("true top capability = the operator's most common category per the "
                         "package's capability classifier (signals.capability)")
    else:
        notes.append("no --exchanges: exchange-count errors, capabilities and baselines "
                     "not computed")
    progress("operator truth")
    operators = _operator_truth(con, bool(exchanges), with_capability=pred_dir is not None)
    if exchanges:
        progress("baselines")
        preds += _baselines(con, ecfg)
    progress("scoring")
    systems = {p.name: score(con, p, operators) for p in preds}
    counts = con.execute("SELECT count(*), count(*) FILTER (positive) FROM truth").fetchall()[0]
    con.close()
    return {
        "truth": str(truth_path),
        "pred": str(pred_dir) if pred_dir is not None else None,
        "accounts": counts[0],
        "attacking_accounts": counts[1],
        "baseline_config": ecfg if exchanges else None,
        "notes": notes,
        "systems": systems,
    }


def _num(x: float | None) -> str:
    """Three decimals; a value that rounds to zero prints as 0.000, not -0.000."""
    if x is None:
        return "–"
    return f"{x if abs(x) >= 0.0005 else 0.0:.3f}"


def _frac(d: dict[str, Any], key: str, pct: bool = False) -> str:
    v = d.get(key)
    if v is None:
        return "–"
    head = f"{100 * v:.2f}%" if pct else f"{v:.3f}"
    return f"{head} ({d['flagged']}/{d['accounts']})"


def _capability(match: dict[str, Any]) -> str:
    if match["capability_match"] is None:
        return "–"
    if match["capability_match"]:
        return f"{match['top_capability']} ✓"
    return f"{match['top_capability']} ✗ ({match['true_top_capability']})"


def render_table(result: dict[str, Any]) -> Table:
    """One row per metric, one column per system (detector first, then the baselines)."""
    systems = result["systems"]
    names = list(systems)
    table = Table(title=f"distillguard eval — {result['attacking_accounts']} attacking of "
                        f"{result['accounts']} accounts")
    table.add_column("metric")
    for n in names:
        table.add_column(n, justify="right")

    def row(label: str, cell: Any, end_section: bool = False) -> None:
        table.add_row(label, *(cell(systems[n]) for n in names), end_section=end_section)

    row("accounts flagged", lambda s: str(s["flagged"]))
    row("precision", lambda s: _num(s["precision"]))
    row("recall", lambda s: _num(s["recall"]))
    row("F1", lambda s: _num(s["f1"]))
    row("ARI (campaign vs operator)", lambda s: _num(s["ari"]), end_section=True)
    first = systems[names[0]]
    pops = list(first["fpr_by_population"])
    for i, pop in enumerate(pops):
        row(f"FPR {pop}", lambda s, p=pop: _frac(s["fpr_by_population"][p], "fpr", pct=True),
            end_section=i == len(pops) - 1)
    ops = list(first["recall_by_operator"])
    for i, op in enumerate(ops):
        row(f"recall {op}", lambda s, o=op: _frac(s["recall_by_operator"][o], "recall"),
            end_section=i == len(ops) - 1)
    truth = first["campaigns_by_operator"]
    if any(t["true_exchanges"] is not None for t in truth.values()):
        for i, op in enumerate(ops):
            row(f"exch. error {op}",
                lambda s, o=op: _num(s["campaigns_by_operator"][o]["exchange_error"]),
                end_section=i == len(ops) - 1)
    if any(t["true_top_capability"] is not None for t in truth.values()):
        for op in ops:
            row(f"top capability {op}",
                lambda s, o=op: _capability(s["campaigns_by_operator"][o]))
    return table
