"""The honest radioactivity score: each (context, token) pair counts once in the corpus.

Green membership comes from transformers' own `_get_greenlist_ids` for the key, so it
matches generation exactly. What the built-in `WatermarkDetector` does not do, and an
honest p-value needs (Sander et al. 2024):

* de-duplicate pairs across the *whole corpus*: a model repeating the same phrase in many
  samples would otherwise count its one green-or-not coin flip many times (our probe: a
  never-watermarked model "detected" at p ~ 0);
* never score pairs from the sample's own prompt (the model may copy them), nor any pair
  touching padding, BOS/EOS or other special tokens;
* use the generator's exact vocabulary size, and the exact green share transformers uses
  (``int(vocab_size * ratio) / vocab_size``) as the null probability.

Then an exact one-sided binomial test, and the same statistic under random wrong keys as
a calibration check printed beside every verdict.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.provenance.calibration import Calibration, calibrate
from distillguard.provenance.greenlist import (
    binomial_test,
    check_shape,
    green_mask,
    pack,
    windows,
)
from distillguard.provenance.keys import WatermarkKey, campaign_of
from distillguard.provenance.mark import WatermarkParams


@dataclass(frozen=True)
class Sample:
    """One suspect generation: its prompt and its completion, as generator token ids."""

    prompt_ids: Sequence[int]
    completion_ids: Sequence[int]


@dataclass
class PairCounts:
    """Where the candidate pairs went; shows the de-duplication did real work."""

    candidate: int = 0
    in_prompt: int = 0
    special: int = 0
    duplicate: int = 0


def sample_keys(sample: Sample, params: WatermarkParams, special: np.ndarray,
                counts: PairCounts) -> np.ndarray:
    """Packed keys of the pairs in one completion that may be scored (not yet de-duplicated).

    A pair is scored only if its target is a completion token the seeding could act on
    (at least `context_width` tokens before it, as in generation), none of its tokens is
    special, and the same pair does not occur inside the prompt.
    """
    width = check_shape(params)
    prompt = np.asarray(sample.prompt_ids, dtype=np.int64)
    full = np.concatenate([prompt, np.asarray(sample.completion_ids, dtype=np.int64)])
    if len(full) and (full.min() < 0 or full.max() >= params.vocab_size):
        raise InputError(f"token id outside the generator vocabulary [0, {params.vocab_size})")
    all_rows = windows(full, width)
    first_target = max(len(prompt), params.context_width)
    rows = all_rows[max(first_target - width + 1, 0):]
    counts.candidate += len(rows)
    clean = ~np.isin(rows, special).any(axis=1)
    counts.special += int((~clean).sum())
    keys = pack(rows[clean])
    prompt_keys = pack(windows(prompt, width))
    in_prompt = np.isin(keys, prompt_keys)
    counts.in_prompt += int(in_prompt.sum())
    return keys[~in_prompt]


def corpus_keys(samples: Iterable[Sample], params: WatermarkParams,
                special_ids: Iterable[int]) -> tuple[np.ndarray, PairCounts]:
    """The unique scorable pairs of a whole corpus: each (context, token) counts once."""
    special = np.asarray(sorted(set(special_ids)), dtype=np.int64)
    counts = PairCounts()
    parts = [sample_keys(s, params, special, counts) for s in samples]
    keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    unique = np.unique(keys)
    counts.duplicate = len(keys) - len(unique)
    return unique, counts


@dataclass
class ProvenanceResult:
    """One test's outcome; `to_json` is the `provenance.json` report format."""

    key_id: str
    campaign_id: str | None
    mode: str
    tokens_scored: int
    green_tokens: int
    green_fraction: float
    gamma: float
    z: float
    p_value: float
    log10_p_value: float | None
    verdict: str
    verdict_text: str
    calibration: Calibration
    pairs: PairCounts
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able dict (schema documented in docs/provenance.md)."""
        return asdict(self)


def verdict(p: float, n: int, cal: Calibration, alpha: float, min_tokens: int,
            key_id: str) -> tuple[str, str]:
    """A short code and one plain sentence that says what the numbers do and do not show."""
    if n < min_tokens:
        return "insufficient", (f"only {n} unique (context, token) pairs could be scored "
                                f"(need {min_tokens}); no conclusion")
    if not cal.ok:
        return "uncalibrated", (f"wrong-key z has mean {cal.mean:.2f} and sd {cal.sd:.2f}, "
                                "not ~N(0,1): the p-value is not trustworthy for this corpus")
    if p < alpha:
        return "learned", (f"the text carries the watermark of key {key_id!r} (p = {p:.2g} < "
                           f"{alpha:g}): whoever produced it learned from text marked with that "
                           "key; it does not show who trained the model")
    return "not_detected", (f"no evidence of the key {key_id!r} watermark (p = {p:.2g}); "
                            "absence is not proof of innocence (paraphrased training data "
                            "removes inherited watermarks)")


def evaluate_keys(keys: np.ndarray, counts: PairCounts, key: WatermarkKey,
                  params: WatermarkParams, section: dict[str, Any], mode: str,
                  campaign_id: str | None = None) -> ProvenanceResult:
    """Score de-duplicated pairs under `key`, calibrate under wrong keys, and give a verdict."""
    green = green_mask(keys, params, key)
    n, k = len(keys), int(green.sum())
    z, p, log_p = binomial_test(k, n, params.gamma)
    cal = calibrate(keys, params, key, int(section["calibration_keys"]),
                    int(section["calibration_seed"]), float(section["calibration_mean_tol"]),
                    section["calibration_sd_range"])
    code, text = verdict(p, n, cal, float(section["alpha"]), int(section["min_tokens"]),
                         key.key_id)
    return ProvenanceResult(
        key_id=key.key_id, campaign_id=campaign_id or campaign_of(key.key_id), mode=mode,
        tokens_scored=n, green_tokens=k, green_fraction=k / n if n else 0.0,
        gamma=params.gamma, z=z, p_value=p, log10_p_value=log_p, verdict=code,
        verdict_text=text, calibration=cal, pairs=counts,
        params={"vocab_size": params.vocab_size, "greenlist_ratio": params.greenlist_ratio,
                "seeding_scheme": params.seeding_scheme,
                "context_width": params.context_width})


def score_samples(samples: Sequence[Sample], key: WatermarkKey, params: WatermarkParams,
                 special_ids: Iterable[int], section: dict[str, Any],
                 campaign_id: str | None = None) -> ProvenanceResult:
    """Closed-model test: is the suspect's generated text green under our key?"""
    keys, counts = corpus_keys(samples, params, special_ids)
    return evaluate_keys(keys, counts, key, params, section, "generation", campaign_id)
