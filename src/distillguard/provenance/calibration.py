"""Calibration beside every verdict: the same statistic under random wrong keys.

If the pairs really are independent coin flips under the null, z under keys that never
marked anything is N(0, 1). A corpus where that fails (mean off zero, spread far from 1)
breaks the p-value's assumptions, and the verdict says so instead of accusing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distillguard.errors import InputError
from distillguard.provenance.greenlist import binomial_test, green_mask
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.mark import WatermarkParams


@dataclass
class Calibration:
    """z of the same pairs under random wrong keys: should look like N(0, 1)."""

    mean: float
    sd: float
    n_keys: int
    ok: bool


def calibrate(keys: np.ndarray, params: WatermarkParams, true_key: WatermarkKey, n_keys: int,
              seed: int, mean_tol: float, sd_range: Sequence[float]) -> Calibration:
    """Score the same pairs under `n_keys` random wrong keys (deterministic in `seed`)."""
    if n_keys < 20:
        raise InputError(f"calibration needs at least 20 wrong keys, got {n_keys}")
    rng = np.random.default_rng(seed)
    zs: list[float] = []
    while len(zs) < n_keys:
        value = int(rng.integers(1, 2 ** 62))
        if value == true_key.hashing_key:
            continue
        green = green_mask(keys, params, WatermarkKey(f"wrong-{len(zs)}", value))
        zs.append(binomial_test(int(green.sum()), len(keys), params.gamma)[0])
    mean, sd = float(np.mean(zs)), float(np.std(zs, ddof=1))
    ok = abs(mean) <= mean_tol and sd_range[0] <= sd <= sd_range[1]
    return Calibration(mean=mean, sd=sd, n_keys=n_keys, ok=ok)
