"""What the endpoints do, without HTTP: check, store, link when due, decide, look up.

The FastAPI app (`app.py`) and the replay both go through one `Service`, so the replay
measures the same code path a gateway hits.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from distillguard.contract import ACCOUNTS, EXCHANGES, RELEASES, Table
from distillguard.serve.decisions import decide_batch
from distillguard.serve.events import check_records
from distillguard.serve.link import Linker
from distillguard.serve.state import State

SEARCH_KINDS = ("ip", "asn", "payment_fingerprint")


class Service:
    """One state database, its linker and the configuration."""

    def __init__(self, db: Path | str, cfg: dict[str, Any], write_files: bool = True) -> None:
        self.cfg = cfg
        self.state = State(db, commit_seconds=float(cfg["serve"]["commit_seconds"]))
        self.linker = Linker(self.state, cfg, write_files)

    @property
    def max_prompt_bytes(self) -> int:
        return int(self.cfg["ingest"]["max_prompt_bytes"])

    def post_events(self, records: list[Any], durable: bool = False) -> dict[str, Any]:
        """Take the valid events of a batch and answer a decision per account in it.

        The events are committed by the next group commit, or before answering when
        DURABLE (see `state.py` for what a crash can lose otherwise).
        """
        checked = check_records(records, EXCHANGES, self.max_prompt_bytes)
        rows = checked.columns
        fresh = self.state.add_events(rows)
        for i, new in zip(checked.index, fresh, strict=True):
            if not new:
                checked.statuses[i].update(status="duplicate", field="exchange_id",
                                           error="exchange_id already received")
        linked = self.linker.maybe_run()
        decisions = decide_batch(self.state, rows["account_id"], rows["ip"], rows["ts"],
                                 self.cfg["serve"])
        if durable:
            self.state.flush()
        duplicate = fresh.count(False)
        return {"accepted": len(fresh) - duplicate, "duplicate": duplicate,
                "rejected": len(records) - len(fresh), "linked": linked,
                "events": checked.statuses, "decisions": decisions}

    def post_table(self, table: Table, records: list[Any]) -> dict[str, Any]:
        """Accounts or releases: upserted by key; bad records answered like events."""
        checked = check_records(records, table, self.max_prompt_bytes)
        target = {ACCOUNTS.name: "account_meta", RELEASES.name: "release_meta"}[table.name]
        stored = self.state.upsert(table, target, checked.arrow())
        return {"accepted": stored, "rejected": len(checked.rejected),
                "records": checked.statuses}

    def campaigns(self, current: bool = True) -> list[dict[str, Any]]:
        """The latest run's campaigns (or, with current=False, earlier runs' ones)."""
        return self.state.rows(
            "SELECT campaign_id, score, n_accounts, n_exchanges, first_seen, last_seen, "
            "linked_at FROM link_campaigns WHERE current = ? "
            "ORDER BY linked_at DESC, score DESC, campaign_id", [current])

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        return self.state.campaign_doc(campaign_id)

    def account(self, account_id: str) -> dict[str, Any] | None:
        """An account's last decision, latest linking result, running counts and metadata."""
        state = self.state.rows("SELECT * FROM account_state WHERE account_id = ?",
                                [account_id])
        meta = self.state.rows("SELECT * FROM account_meta WHERE account_id = ?", [account_id])
        if not state and not meta:
            return None
        decision = self.state.rows("SELECT decision, reasons, campaign_id, decided_at "
                                   "FROM decisions WHERE account_id = ?", [account_id])
        link = self.state.rows("SELECT score, flagged, campaign_id, reasons FROM link_accounts "
                               "WHERE account_id = ?", [account_id])
        enforced = self.state.rows("SELECT level, campaign_id, score, reasons, since "
                                   "FROM enforced WHERE account_id = ?", [account_id])
        return {"account_id": account_id,
                "decision": decision[0] if decision else {"decision": "allow", "reasons": []},
                "latest_link": link[0] if link else None,
                "enforced": enforced[0] if enforced else None,
                "state": state[0] if state else None,
                "metadata": meta[0] if meta else None}

    def indicators(self) -> list[dict[str, Any]]:
        return self.state.rows("SELECT kind, value, campaign_id, since FROM indicators "
                               "ORDER BY kind, value")

    def search(self, kind: str, value: str, limit: int = 200) -> list[dict[str, Any]]:
        """Accounts seen with an IP, an ASN or a payment fingerprint, with their decision."""
        if kind == "payment_fingerprint":
            sql = "SELECT account_id FROM account_meta WHERE payment_fingerprint = ?"
        elif kind in ("ip", "asn"):
            column = "ip" if kind == "ip" else "CAST(asn AS VARCHAR)"
            last = "last_ip" if kind == "ip" else "CAST(last_asn AS VARCHAR)"
            sql = (f"SELECT DISTINCT account_id FROM events WHERE {column} = ? UNION "
                   f"SELECT account_id FROM account_state WHERE {last} = ?")
        else:
            raise ValueError(f"kind must be one of {', '.join(SEARCH_KINDS)}")
        params = [value] * sql.count("?")
        return self.state.rows(
            f"SELECT s.account_id, coalesce(d.decision, 'allow') AS decision, d.campaign_id, "
            f"d.reasons FROM ({sql}) s LEFT JOIN decisions d USING (account_id) "
            f"ORDER BY s.account_id LIMIT {int(limit)}", params)

    def status(self) -> dict[str, Any]:
        meta = {r["key"]: r["value"] for r in self.state.rows("SELECT * FROM meta")}
        counts = self.state.rows(
            "SELECT (SELECT count(*) FROM events) AS window_events, "
            "(SELECT count(*) FROM account_state) AS accounts, "
            "(SELECT count(*) FROM link_campaigns WHERE current) AS campaigns")[0]
        decided = {r["decision"]: r["n"] for r in self.state.rows(
            "SELECT decision, count(*) AS n FROM decisions GROUP BY ALL")}
        return {**counts, "decisions": decided, "meta": meta, "link_error": self.linker.error,
                "write_error": self.state.write_error}

    def close(self) -> None:
        self.linker.close()
        self.state.close()


def _fallback(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def dumps(obj: Any) -> bytes:
    """JSON for API answers (timestamps as ISO text); orjson, a few times faster."""
    return orjson.dumps(obj, default=_fallback, option=orjson.OPT_NON_STR_KEYS)
