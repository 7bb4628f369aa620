"""Timing evidence for a cluster: synchrony against a null model, and the release pivot.

Synchrony (SynchroTrap-style): in fine time buckets, count pairs of member accounts
active together and compare with what independent accounts with the same activity
levels would give under the platform-wide activity profile. The null expectation for
bucket b is sum over pairs i<j of p_i(b) p_j(b), with p_i(b) = min(1, a_i g(b) / G),
a_i the account's active buckets, g(b) the number of accounts active in b and G = sum g.
Pair counts are approximately Poisson under the null, so z = (obs - exp) / sqrt(exp).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Synchrony:
    """Observed and expected co-active member pairs, their ratio (lift) and z-score."""

    observed: float
    expected: float
    lift: float
    z: float


def synchrony(member_buckets: pd.DataFrame, active: pd.Series, profile: pd.Series) -> Synchrony:
    """Synchrony of one cluster.

    member_buckets: columns bucket, k (member accounts active in the bucket).
    active: active buckets per member account. profile: accounts active per bucket (all).
    """
    total = float(profile.sum())
    if member_buckets.empty or total <= 0 or len(active) < 2:
        return Synchrony(0.0, 0.0, 0.0, 0.0)
    k = member_buckets["k"].to_numpy(dtype=float)
    observed = float((k * (k - 1) / 2).sum())
    g = profile.to_numpy(dtype=float) / total  # share of all activity in each bucket
    # Member i is active in bucket b with p = min(1, a_i g_b). Per bucket the sums of p and
    # p^2 over members come from the sorted a and its running sums (members with
    # a_i g_b > 1 count 1 each), never a members x buckets matrix: at provider scale a
    # cluster has thousands of members and a fortnight thousands of buckets.
    a = np.sort(active.to_numpy(dtype=float))
    run1 = np.concatenate([[0.0], np.cumsum(a)])
    run2 = np.concatenate([[0.0], np.cumsum(a * a)])
    with np.errstate(divide="ignore"):
        below = np.searchsorted(a, np.where(g > 0, 1.0 / g, np.inf), side="right")
    over = len(a) - below
    s1, s2 = g * run1[below] + over, g * g * run2[below] + over
    expected = float(((s1 * s1 - s2) / 2).sum())
    lift = observed / expected if expected > 0 else 0.0
    z = (observed - expected) / np.sqrt(expected) if expected > 0 else 0.0
    return Synchrony(observed, expected, lift, float(z))


def release_pivot(cluster_new: float, cluster_total: float, others_new: float,
                  others_total: float) -> tuple[float, float]:
    """Share of a cluster's traffic on a new model in the 24 h after its release, and the
    same share for everyone else (the benign reference)."""
    share = cluster_new / cluster_total if cluster_total else 0.0
    ref = others_new / others_total if others_total else 0.0
    return share, ref
