"""The run as every output sees it: redacted once, here, so no writer can forget to.

Each writer (HTML, Markdown, STIX, CSV) reads campaigns and accounts only through a
`RunView`; with a key, IPs, CIDRs, e-mail domains and payment fingerprints are already
tokens and free text (signal details, reasons, template examples) is scrubbed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from distillguard.outputs.provenance_results import load_provenance
from distillguard.outputs.redact import Redactor, scrub_snippet
from distillguard.outputs.rundir import RunDir

REDACTED_INDICATORS = ("ips", "cidrs", "payment_fingerprints", "email_domains")


@dataclass
class RunView:
    """A redacted, report-ready view of a run directory."""

    rd: RunDir
    redactor: Redactor
    cfg: dict[str, Any]
    campaigns: list[dict[str, Any]]
    run: dict[str, Any]
    # provenance results by campaign id, and warnings about files that could not be used
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def redacted(self) -> bool:
        return self.redactor.active

    def flagged_accounts(self) -> pa.Table:
        """Flagged accounts, strongest first, with reasons scrubbed and, where the run has
        it, the verification path (null otherwise)."""
        has_path = "verification_path" in self.rd.columns.get("account_features", [])
        path_sql = "f.verification_path" if has_path else "CAST(NULL AS VARCHAR)"
        join = ("LEFT JOIN account_features f USING (account_id)"
                if self.rd.has("account_features") else "")
        table = self.rd.db.sql(
            f"SELECT a.account_id, a.score, a.campaign_id, a.reasons, "
            f"{path_sql} AS verification_path FROM accounts a {join} "
            f"WHERE a.flagged ORDER BY a.score DESC, a.account_id"
        ).to_arrow_table()
        if not self.redacted:
            return table
        reasons = [[self.redactor.text(r) for r in (rs or [])]
                   for rs in table.column("reasons").to_pylist()]
        return table.set_column(table.schema.get_field_index("reasons"), "reasons",
                                pa.array(reasons, pa.list_(pa.string())))

    def templates(self, campaign_id: str) -> list[dict[str, Any]]:
        """The campaign's most used prompt templates, examples scrubbed and truncated."""
        if not self.rd.has("templates"):
            return []
        rows = self.rd.query(
            "SELECT template_id, n_exchanges, n_accounts, example FROM templates "
            "WHERE campaign_id = ? ORDER BY n_exchanges DESC, template_id LIMIT ?",
            [campaign_id, int(self.cfg["top_templates"])],
        ).fetchall()
        return [
            {"template_id": t, "n_exchanges": n, "n_accounts": a,
             "example": self.redactor.text(scrub_snippet(ex, int(self.cfg["snippet_chars"])))}
            for t, n, a, ex in rows
        ]


def _redact_strings(obj: Any, r: Redactor) -> Any:
    """Every string inside a JSON document through the redactor (run.json is free-form)."""
    if isinstance(obj, str):
        return r.text(obj)
    if isinstance(obj, list):
        return [_redact_strings(v, r) for v in obj]
    if isinstance(obj, dict):
        return {k: _redact_strings(v, r) for k, v in obj.items()}
    return obj


def _template_ids(templates: list[Any] | None) -> list[str]:
    """Prompt-template indicators as ids: the engine may give objects carrying raw prompt
    examples, which are shown only through `RunView.templates` (scrubbed, truncated)."""
    return [str(t.get("template_id")) if isinstance(t, dict) else str(t)
            for t in templates or []]


def _normalise(c: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(c)
    ind = out.setdefault("indicators", {})
    ind["prompt_templates"] = _template_ids(ind.get("prompt_templates"))
    return out


def _redact_campaign(c: dict[str, Any], r: Redactor) -> dict[str, Any]:
    out = copy.deepcopy(c)
    ind = out["indicators"]
    for key in REDACTED_INDICATORS:
        ind[key] = r.values(str(v) for v in ind.get(key) or [])
    ind["prompt_templates"] = [r.text(t) for t in ind["prompt_templates"]]
    for s in out.get("signals") or []:
        s["detail"] = r.text(s.get("detail"))
        if isinstance(s.get("value"), str):
            s["value"] = r.text(s["value"])
    return out


def make_view(rd: RunDir, key: bytes | None, cfg: dict[str, Any]) -> RunView:
    """Build the view; campaigns are ordered by score (strongest first), then id."""
    known = [
        str(v)
        for c in rd.campaigns
        for k in REDACTED_INDICATORS
        for v in (c.get("indicators") or {}).get(k) or []
    ]
    redactor = Redactor(key, known)
    campaigns = sorted((_normalise(c) for c in rd.campaigns),
                       key=lambda c: (-float(c["score"]), str(c["campaign_id"])))
    run = rd.run
    provenance, warnings = load_provenance(rd.path, [str(c["campaign_id"]) for c in campaigns])
    if redactor.active:
        campaigns = [_redact_campaign(c, redactor) for c in campaigns]
        run = _redact_strings(run, redactor)
        # Provenance files hold key ids, numbers and a sentence: nothing identifying unless
        # someone chose a free-form key id with an address in it, so scrub the strings.
        provenance = {cid: _redact_strings(doc, redactor) for cid, doc in provenance.items()}
        warnings = [redactor.text(w) or "" for w in warnings]
    return RunView(rd=rd, redactor=redactor, cfg=cfg, campaigns=campaigns, run=run,
                   provenance=provenance, warnings=warnings)
