"""The one place signals are registered (as Presidio registers recognizers).

Three levels, one shape: a signal has a `name`, a `description` (shown in reports), the
contract columns it `requires`, and one function. Exchange signals return an Ibis column
expression over the exchanges table; account signals return named Ibis aggregations
over the per-exchange table; campaign signals are computed per cluster in `campaigns.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ibis.expr.types as ir


@dataclass(frozen=True)
class Signal:
    """A named, described unit of evidence and the columns it needs."""

    name: str
    description: str
    requires: tuple[str, ...]
    level: str  # "exchange" | "account"
    build: Callable[..., Any]
    default: Any = None  # value used when the signal cannot be computed
    tags: tuple[str, ...] = field(default_factory=tuple)

    def available(self, present: set[str]) -> bool:
        return all(col in present for col in self.requires)

    def missing(self, present: set[str]) -> list[str]:
        return [c for c in self.requires if c not in present]


EXCHANGE_SIGNALS: dict[str, Signal] = {}
TEXT = "text"  # tag: a function of the prompt and the system prompt only
# Tag of account signals that read the narrow (account_id, ts, gap_s) table instead of the
# full per-exchange one: the seconds since the account's previous exchange need a window
# sorted by account and time, which is far cheaper over two columns than over the row.
GAPS = "gaps"
# Tag of account signals that read the narrow (account_id, instruction_task, family_once)
# table: whether the account sends an exchange's template family only once needs a count
# per account and family, again far cheaper over a few columns than over the row.
FAMILIES = "families"
ACCOUNT_SIGNALS: dict[str, Signal] = {}


def exchange_signal(name: str, description: str, requires: tuple[str, ...] = (),
                    default: Any = None, tags: tuple[str, ...] = ()
                    ) -> Callable[[Callable[[ir.Table], ir.Value]], Callable[[ir.Table], ir.Value]]:
    """Register a per-exchange signal: `fn(exchanges) -> column expression`. Tag it
    `TEXT` when it reads only `prompt` and `system_prompt`: the pipeline then computes it
    once per distinct text instead of once per exchange."""

    def deco(fn: Callable[[ir.Table], ir.Value]) -> Callable[[ir.Table], ir.Value]:
        if name in EXCHANGE_SIGNALS:
            raise ValueError(f"exchange signal {name!r} registered twice")
        EXCHANGE_SIGNALS[name] = Signal(name, description, requires, "exchange", fn, default,
                                        tags)
        return fn

    return deco


def account_signal(name: str, description: str, requires: tuple[str, ...] = (),
                   tags: tuple[str, ...] = ()) -> Callable[
        [Callable[[ir.Table], dict[str, ir.Scalar]]], Callable[[ir.Table], dict[str, ir.Scalar]]]:
    """Register a per-account signal: `fn(per_exchange) -> {column: aggregation}` (tagged
    `GAPS`: over the account_id, ts, gap_s table; `FAMILIES`: over the account_id,
    instruction_task, family_once table)."""

    def deco(fn: Callable[[ir.Table], dict[str, ir.Scalar]]) -> Callable[
            [ir.Table], dict[str, ir.Scalar]]:
        if name in ACCOUNT_SIGNALS:
            raise ValueError(f"account signal {name!r} registered twice")
        ACCOUNT_SIGNALS[name] = Signal(name, description, requires, "account", fn, tags=tags)
        return fn

    return deco
