"""Black-box model provenance (after Nikolić et al. 2025): no watermark needed.

Our model, a suspect and reference models answer the same probe prompts. Per probe the
null is "from the suspect's point of view our model is just another reference model":
our answers are then exchangeable with the reference answers, so an exact permutation
test of the statistic

    T = mean sim(suspect, ours) - mean sim(suspect, references)

over which pooled answers carry the label "ours" gives a p-value. Holm–Bonferroni across
probes controls the family-wise error; any rejection rejects the global null at `alpha`.
Similarity is the Jaccard index of word 1- and 2-gram sets: cheap, tokenizer-free.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.jsonl import read_jsonl

_WORD = re.compile(r"\w+")
#: Exact enumeration up to this many relabelings; Monte Carlo (seeded) above.
_EXACT_MAX = 20000
_MC_DRAWS = 20000


def ngrams(text: str) -> frozenset[str]:
    """Word unigrams and bigrams of a lower-cased answer."""
    words = _WORD.findall(text.lower())
    return frozenset(words) | frozenset(f"{a} {b}" for a, b in itertools.pairwise(words))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b|, 0 for two empty answers."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def permutation_p(column_means: np.ndarray, n_ours: int, seed: int) -> tuple[float, float]:
    """Observed T (the first `n_ours` columns are ours) and its one-sided permutation p."""
    n = len(column_means)
    total = column_means.sum()

    def stat(sums: np.ndarray) -> np.ndarray:
        return sums / n_ours - (total - sums) / (n - n_ours)

    observed = float(stat(np.asarray(column_means[:n_ours].sum())))
    if math.comb(n, n_ours) <= _EXACT_MAX:
        combos = np.array(list(itertools.combinations(range(n), n_ours)))
        null = stat(column_means[combos].sum(axis=1))
        return observed, float((null >= observed - 1e-12).mean())
    rng = np.random.default_rng(seed)
    picks = np.argsort(rng.random((_MC_DRAWS, n)), axis=1)[:, :n_ours]
    null = stat(column_means[picks].sum(axis=1))
    return observed, float((1 + (null >= observed - 1e-12).sum()) / (1 + _MC_DRAWS))


def holm(p: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p_arr = np.asarray(p, dtype=float)
    order = np.argsort(p_arr, kind="stable")
    m = len(p_arr)
    adjusted = np.maximum.accumulate((m - np.arange(m)) * p_arr[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return out


@dataclass
class ProbeResult:
    """One probe's similarities and test."""

    probe_id: str
    sim_ours: float
    sim_references: float
    statistic: float
    p_value: float
    p_holm: float
    rejected: bool


@dataclass
class CompareResult:
    """The comparison of one suspect with our model against reference models."""

    ours: str
    suspect: str
    references: list[str]
    probes_tested: int
    probes_skipped: int
    probes_rejected: int
    closer_to_ours: float
    alpha: float
    verdict: str
    verdict_text: str
    probes: list[ProbeResult]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def read_answers(path: Path) -> dict[str, dict[str, list[str]]]:
    """model -> probe_id -> answers, from JSONL rows {"model", "probe_id", "answer"}."""
    table: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for row_no, row in read_jsonl(path):
        for col in ("model", "probe_id", "answer"):
            if not isinstance(row.get(col), str):
                raise InputError("missing or non-string value", file=str(path), row=row_no,
                                 column=col)
        table[row["model"]][row["probe_id"]].append(row["answer"])
    return table


def compare(answers: dict[str, dict[str, list[str]]], ours: str, suspect: str,
            references: Sequence[str] | None = None, alpha: float = 0.05,
            seed: int = 0) -> CompareResult:
    """Is `suspect` closer to `ours` than reference models are, probe by probe?"""
    refs = list(references) if references else sorted(set(answers) - {ours, suspect})
    for name in (ours, suspect, *refs):
        if name not in answers:
            raise InputError(f"no answers for model {name!r}")
    if not refs:
        raise InputError("compare needs at least one reference model")
    rows: list[tuple[str, float, float, float, float]] = []
    skipped = 0
    for probe in sorted(answers[suspect]):
        mine = answers[ours].get(probe, [])
        pool_refs = [a for r in refs for a in answers[r].get(probe, [])]
        if not mine or not pool_refs:
            skipped += 1
            continue
        sus = [ngrams(a) for a in answers[suspect][probe]]
        pool = [ngrams(a) for a in mine + pool_refs]
        sims = np.array([[jaccard(s, a) for a in pool] for s in sus])
        col = sims.mean(axis=0)
        t, p = permutation_p(col, len(mine), seed)
        rows.append((probe, float(col[:len(mine)].mean()), float(col[len(mine):].mean()), t, p))
    if not rows:
        raise InputError("no probe was answered by our model, the suspect and a reference")
    adjusted = holm([r[4] for r in rows])
    probes = [ProbeResult(probe_id=r[0], sim_ours=r[1], sim_references=r[2], statistic=r[3],
                          p_value=r[4], p_holm=float(a), rejected=bool(a < alpha))
              for r, a in zip(rows, adjusted, strict=True)]
    n_rej = sum(p.rejected for p in probes)
    closer = float(np.mean([p.statistic > 0 for p in probes]))
    if n_rej:
        code, text = "related", (
            f"{suspect!r} answers closer to {ours!r} than to the references on {n_rej} of "
            f"{len(probes)} probes (Holm–Bonferroni, family-wise error {alpha:g}): evidence "
            f"that it derives from {ours!r}; not proof of how (distillation, fine-tuning, "
            "shared training data)")
    else:
        code, text = "not_shown", (
            f"no probe shows {suspect!r} closer to {ours!r} than to the references at "
            f"family-wise error {alpha:g}; too few answers per probe also gives this")
    return CompareResult(ours=ours, suspect=suspect, references=refs, probes_tested=len(probes),
                         probes_skipped=skipped, probes_rejected=n_rej, closer_to_ours=closer,
                         alpha=alpha, verdict=code, verdict_text=text, probes=probes)
