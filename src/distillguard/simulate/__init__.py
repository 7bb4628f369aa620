"""Traffic simulator: synthetic API logs with ground truth, written per the log contract.

`generate()` builds the accounts of a scenario, renders its prompt pools, then streams one
Parquet part of exchanges per simulated day into `out/exchanges/`, and finally writes
`accounts.parquet`, `releases.parquet` and `truth.parquet`. It only writes files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from distillguard.contract import CAPABILITIES
from distillguard.errors import InputError
from distillguard.simulate import corpus, prompts
from distillguard.simulate.accounts import AccountBuilder, Accounts, accounts_table
from distillguard.simulate.grammar import load
from distillguard.simulate.populations import NEW_MODEL, ORGANIC_MIX, POPULATIONS, RELEASED_BEFORE
from distillguard.simulate.scenarios import SCENARIOS, Scenario, get
from distillguard.simulate.traffic import DayContext, TrafficModel
from distillguard.simulate.writer import PartWriter, write_table

__all__ = ["SCENARIOS", "generate"]

DAY_US = 86_400_000_000


def _expected(acc: Accounts) -> np.ndarray:
    """Approximate exchanges per (style, capability), to size the prompt pools."""
    a = acc.a
    total = a["daily_mean"] * (a["last_day"] - a["first_day"] + 1)
    organic = np.array([POPULATIONS[p].organic_share for p in acc.populations])[a["pop"]]
    mix = np.diff(a["cat_cum"], axis=1, prepend=0.0)
    out = np.zeros((len(acc.styles), len(CAPABILITIES)))
    np.add.at(out, a["style"], (total * (1 - organic))[:, None] * mix)
    out[acc.styles.index("organic")] += (total * organic).sum() * np.array(
        [ORGANIC_MIX.get(c, 0.0) for c in CAPABILITIES])
    return out


def _releases(spec: Scenario, start_us: int) -> pa.Table:
    models = [*RELEASED_BEFORE, NEW_MODEL]
    offsets = [-d for d in RELEASED_BEFORE.values()] + [spec.release_day]
    when = [start_us + round(o * DAY_US) for o in offsets]
    return pa.table({"model": pa.array(models, pa.string()),
                     "released_at": pa.array(when, pa.timestamp("us", tz="UTC"))})


def generate(scenario: str, seed: int, scale: float, out: Path,
             progress: Callable[[int, int], None] | None = None,
             prompts_dir: Path | None = None) -> dict[str, Any]:
    """Write the scenario's files into `out` and return counts (see docs/simulator.md).

    `prompts_dir`: a corpus of real prompts to draw text from (simulate/corpus.py).
    """
    started = time.perf_counter()
    if seed < 0:
        raise InputError(f"--seed must be >= 0, got {seed}")
    spec = get(scenario).scaled(scale)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("output path exists and is not a directory", file=str(out))
    real = corpus.load(prompts_dir) if prompts_dir is not None else None
    grammar = load()
    system_texts, system_index = prompts.system_prompts(grammar, seed)
    acc = AccountBuilder(spec, seed, system_index).build()
    bank = prompts.build(grammar, seed, acc.styles, _expected(acc), real)

    start_us = spec.start_us
    system = pa.array(system_texts, pa.string())
    ctx = DayContext(
        acc=acc, bank=bank, seed=seed, start_us=start_us, start_dow=spec.start_dow,
        release_us=start_us + round(spec.release_day * DAY_US),
        system_texts=system,
        system_len=np.array([len(t) for t in system_texts], dtype=np.int64))
    model = TrafficModel(ctx)

    writer = PartWriter(out / "exchanges")
    rows = 0
    by_pop = np.zeros(len(acc.populations), dtype=np.int64)
    by_cat = np.zeros(len(CAPABILITIES), dtype=np.int64)
    for day in range(spec.days):
        result = model.day(day, rows)
        if result is not None:
            table, pops, cats = result
            writer.write(table)
            rows += table.num_rows
            by_pop += pops
            by_cat += cats
            del table
        if progress is not None:
            progress(day + 1, spec.days)

    accounts, truth = accounts_table(acc, spec)
    write_table(accounts, out / "accounts.parquet")
    write_table(truth, out / "truth.parquet")
    write_table(_releases(spec, start_us), out / "releases.parquet")

    attacker = np.array([POPULATIONS[p].attacker for p in acc.populations])
    pop_accounts = np.bincount(acc.a["pop"], minlength=len(acc.populations))
    return {
        "scenario": scenario, "seed": seed, "scale": scale, "days": spec.days,
        "prompts": None if prompts_dir is None else str(prompts_dir),
        "accounts": acc.n, "attacking_accounts": int(pop_accounts[attacker].sum()),
        "exchanges": rows, "attacking_exchanges": int(by_pop[attacker].sum()),
        "parts": writer.parts,
        "by_population": {p: {"accounts": int(pop_accounts[i]), "exchanges": int(by_pop[i]),
                              "operator": POPULATIONS[p].operator}
                          for i, p in enumerate(acc.populations)},
        "by_capability": {c: int(by_cat[i]) for i, c in enumerate(CAPABILITIES)},
        "templates": bank.templates,
        "seconds": round(time.perf_counter() - started, 2),
    }
