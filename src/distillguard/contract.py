"""The traffic-log contract as data: one source of truth for columns, types and vocabularies.

Mirrors `shared/spec/log-contract.md`. Readers, validators, the simulator and the
outputs all take their column lists from here so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    """Logical column types of the contract."""

    STRING = "string"
    TIMESTAMP = "timestamp"
    INT = "int"
    BOOL = "bool"
    STRING_LIST = "list<string>"


@dataclass(frozen=True)
class Column:
    """One contract column: its name, logical type and whether a file must carry it."""

    name: str
    kind: Kind
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Table:
    """One contract table (exchanges, accounts, releases)."""

    name: str
    columns: tuple[Column, ...]
    key: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)


S, T, N, B, L = Kind.STRING, Kind.TIMESTAMP, Kind.INT, Kind.BOOL, Kind.STRING_LIST

EXCHANGES = Table(
    "exchanges",
    (
        Column("exchange_id", S, True, "unique id of the exchange"),
        Column("ts", T, True, "when the request arrived (UTC)"),
        Column("account_id", S, True, "the billing account that sent it"),
        Column("prompt", S, True, "text of the final user turn; may be null or empty"),
        Column("org_id", S),
        Column("api_key_id", S),
        Column("model", S),
        Column("ip", S),
        Column("asn", N),
        Column("country", S),
        Column("user_agent", S),
        Column("system_prompt", S),
        Column("n_messages", N),
        Column("tool_names", L),
        Column("has_image", B),
        Column("thinking", B),
        Column("input_tokens", N),
        Column("output_tokens", N),
        Column("response", S),
        Column("status", S),
    ),
    key="exchange_id",
)

ACCOUNTS = Table(
    "accounts",
    (
        Column("account_id", S, True),
        Column("created_at", T),
        Column("org_id", S),
        Column("email_domain", S),
        Column("payment_fingerprint", S),
        Column("signup_ip", S),
        Column("signup_asn", N),
        Column("country", S),
        Column("verification_path", S),
        Column("allowlisted", B),
    ),
    key="account_id",
)

RELEASES = Table(
    "releases",
    (
        Column("model", S, True),
        Column("released_at", T, True),
    ),
    key=None,
)

TABLES: dict[str, Table] = {t.name: t for t in (EXCHANGES, ACCOUNTS, RELEASES)}

CAPABILITIES: tuple[str, ...] = (
    "coding",
    "agentic_tool_use",
    "reasoning_math",
    "vision",
    "grading_reward",
    "safety_sensitive",
    "writing",
    "knowledge_qa",
    "chat_other",
)

VERIFICATION_PATHS: tuple[str, ...] = (
    "standard",
    "education",
    "research",
    "startup",
    "enterprise",
    "reseller",
)

# Limits the validator enforces on a row.
MAX_PROMPT_BYTES = 1_000_000

# Output columns of a detection run.
ACCOUNTS_OUT_COLUMNS: tuple[str, ...] = ("account_id", "score", "flagged", "campaign_id", "reasons")
CAMPAIGN_KEYS: tuple[str, ...] = (
    "campaign_id",
    "score",
    "account_ids",
    "n_accounts",
    "n_exchanges",
    "first_seen",
    "last_seen",
    "capabilities",
    "signals",
    "indicators",
)
INDICATOR_KEYS: tuple[str, ...] = (
    "ips",
    "cidrs",
    "asns",
    "payment_fingerprints",
    "email_domains",
    "prompt_templates",
)
TRUTH_COLUMNS: tuple[str, ...] = ("account_id", "operator", "population")
