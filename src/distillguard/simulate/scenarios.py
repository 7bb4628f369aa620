"""Scenario definitions as data: which populations, how many accounts, how much traffic.

`--scale` multiplies account counts and volumes; per-account daily volume, and therefore
realism, stays the same at every scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from distillguard.errors import InputError
from distillguard.simulate.populations import POPULATIONS


@dataclass(frozen=True)
class Cohort:
    """One population inside a scenario: accounts, total exchanges, and groups of shared infra."""

    population: str
    accounts: int
    exchanges: float
    groups: int = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    days: int
    release_day: float            # the new model launches this many days after the start
    cohorts: tuple[Cohort, ...]
    start: str = "2026-03-02"     # a Monday, 00:00 UTC

    @property
    def start_us(self) -> int:
        """Start as epoch microseconds (UTC)."""
        return int(np.datetime64(self.start, "us").astype(np.int64))

    @property
    def start_dow(self) -> int:
        """Day of week of the start, Monday = 0 (1970-01-01 was a Thursday)."""
        return int((np.datetime64(self.start, "D").astype(np.int64) + 3) % 7)

    def scaled(self, scale: float) -> Scenario:
        """Accounts and volume times `scale` (at least one account per cohort)."""
        if not (scale > 0 and math.isfinite(scale)):
            raise InputError(f"--scale must be a positive number, got {scale}")
        cohorts = []
        for c in self.cohorts:
            accounts = max(1, round(c.accounts * scale))
            cohorts.append(replace(c, accounts=accounts, exchanges=c.exchanges * scale,
                                   groups=min(c.groups, accounts)))
        return replace(self, cohorts=tuple(cohorts))


def _c(population: str, accounts: int, exchanges: float, groups: int = 1) -> Cohort:
    return Cohort(population, accounts, exchanges, groups)


_SMALL_BENIGN = (
    _c("casual", 2600, 32_000),
    _c("solo_developer", 320, 30_000),
    _c("consumer_app", 10, 24_000, 4),
    _c("ide_agent", 150, 24_000, 3),
    _c("enterprise_batch", 1, 10_000),
    _c("eval_harness", 6, 8_000, 3),
    _c("university_lab", 45, 3_500),
    _c("cgnat_mobile", 300, 5_000, 2),
    _c("synthetic_data_partner", 8, 9_000),
    _c("reseller_customer", 24, 5_000),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (
    Scenario(
        "small", "All populations at demo size: a few thousand accounts, ~230k exchanges.",
        days=14, release_day=7.7,
        cohorts=(*_SMALL_BENIGN,
                 _c("cot_reward_harvester", 60, 22_000),
                 _c("agentic_hydra", 80, 29_000, 4),
                 _c("coding_harvester", 60, 23_000),
                 _c("low_slow_evader", 50, 6_000),
                 _c("reseller_distiller", 12, 4_300)),
    ),
    Scenario(
        "evasive", "Attackers mostly low-and-slow and reseller-hidden; benign confounders doubled.",
        days=14, release_day=7.7,
        cohorts=(
            _c("casual", 2600, 32_000),
            _c("solo_developer", 320, 30_000),
            _c("consumer_app", 20, 48_000, 8),
            _c("ide_agent", 300, 48_000, 6),
            _c("enterprise_batch", 2, 20_000, 2),
            _c("eval_harness", 12, 16_000, 6),
            _c("university_lab", 90, 7_000, 2),
            _c("cgnat_mobile", 600, 10_000, 4),
            _c("synthetic_data_partner", 16, 18_000, 2),
            _c("reseller_customer", 60, 12_000, 2),
            _c("low_slow_evader", 200, 22_000),
            _c("reseller_distiller", 40, 13_000, 2),
            _c("cot_reward_harvester", 15, 5_000),
            _c("agentic_hydra", 20, 7_000, 2),
            _c("coding_harvester", 15, 5_500),
        ),
    ),
    Scenario(
        "alibaba-scale",
        "Public-case scale: 25,000 attacking accounts, 28.8M attacking exchanges in 45 days.",
        days=45, release_day=30.7,
        cohorts=(
            _c("casual", 60_000, 2_000_000),
            _c("solo_developer", 6_000, 1_500_000),
            _c("consumer_app", 40, 2_000_000, 12),
            _c("ide_agent", 3_000, 1_500_000, 6),
            _c("enterprise_batch", 2, 600_000, 2),
            _c("eval_harness", 30, 300_000, 6),
            _c("university_lab", 200, 100_000, 4),
            _c("cgnat_mobile", 5_000, 300_000, 10),
            _c("synthetic_data_partner", 40, 300_000, 2),
            _c("reseller_customer", 1_500, 400_000, 3),
            _c("cot_reward_harvester", 5_000, 6_000_000, 2),
            _c("agentic_hydra", 8_000, 9_600_000, 6),
            _c("coding_harvester", 7_000, 9_500_000, 2),
            _c("low_slow_evader", 3_500, 1_400_000),
            _c("reseller_distiller", 1_500, 2_300_000, 3),
        ),
    ),
)}


def get(name: str) -> Scenario:
    """The named scenario, or an InputError listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        known = ", ".join(SCENARIOS)
        raise InputError(f"unknown scenario {name!r}; known: {known}") from None


def check() -> None:
    """Every cohort names a known population (run by the tests)."""
    for s in SCENARIOS.values():
        for c in s.cohorts:
            if c.population not in POPULATIONS:
                raise ValueError(f"{s.name}: unknown population {c.population}")
