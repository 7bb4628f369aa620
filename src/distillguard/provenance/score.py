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

import copy
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.provenance.keys import WatermarkKey, campaign_of
from distillguard.provenance.mark import WatermarkParams, logits_processor

_BITS = 21  # bits per token id in a packed pair key
_MAX_WIDTH = 3  # 3 * 21 bits still fit a signed int64


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


def window_width(params: WatermarkParams) -> int:
    """Tokens that fix one pair's green membership: (previous, target) for lefthash
    (transformers seeds it on the last token only), the last `context_width` tokens
    ending at the target for selfhash."""
    return 2 if params.seeding_scheme == "lefthash" else params.context_width


def _check(params: WatermarkParams) -> int:
    width = window_width(params)
    if width > _MAX_WIDTH or params.vocab_size > 2 ** _BITS:
        raise InputError(f"unsupported watermark shape: window {width} tokens, "
                         f"vocab {params.vocab_size} (max {_MAX_WIDTH} and {2 ** _BITS})")
    return width


def pack(rows: np.ndarray) -> np.ndarray:
    """Pack windows (n, width) of token ids into one int64 key per pair."""
    keys = np.zeros(len(rows), dtype=np.int64)
    for j in range(rows.shape[1]):
        keys |= rows[:, j].astype(np.int64) << (_BITS * j)
    return keys


def unpack(keys: np.ndarray, width: int) -> np.ndarray:
    """Inverse of `pack`."""
    mask = (1 << _BITS) - 1
    return np.stack([(keys >> (_BITS * j)) & mask for j in range(width)], axis=1)


def _windows(ids: np.ndarray, width: int) -> np.ndarray:
    if len(ids) < width:
        return np.empty((0, width), dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(ids, width)


def sample_keys(sample: Sample, params: WatermarkParams, special: np.ndarray,
                counts: PairCounts) -> np.ndarray:
    """Packed keys of the pairs in one completion that may be scored (not yet de-duplicated).

    A pair is scored only if its target is a completion token the seeding could act on
    (at least `context_width` tokens before it, as in generation), none of its tokens is
    special, and the same pair does not occur inside the prompt.
    """
    width = _check(params)
    prompt = np.asarray(sample.prompt_ids, dtype=np.int64)
    full = np.concatenate([prompt, np.asarray(sample.completion_ids, dtype=np.int64)])
    if len(full) and (full.min() < 0 or full.max() >= params.vocab_size):
        raise InputError(f"token id outside the generator vocabulary [0, {params.vocab_size})")
    windows = _windows(full, width)
    first_target = max(len(prompt), params.context_width)
    rows = windows[max(first_target - width + 1, 0):]
    counts.candidate += len(rows)
    clean = ~np.isin(rows, special).any(axis=1)
    counts.special += int((~clean).sum())
    keys = pack(rows[clean])
    prompt_keys = pack(_windows(prompt, width))
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


@functools.lru_cache(maxsize=8)
def _template(params: WatermarkParams) -> Any:
    return logits_processor(WatermarkKey("template", 1), params)


def _keyed_processor(key: WatermarkKey, params: WatermarkParams) -> Any:
    """transformers' processor for `key`. Building one costs a 1M-entry randperm (the
    selfhash table), which dominates calibration; lefthash never reads that table, so a
    template is re-keyed instead (tests check it against a freshly built processor)."""
    if params.seeding_scheme != "lefthash":
        return logits_processor(key, params)
    import torch

    processor = copy.copy(_template(params))
    processor.hash_key = key.hashing_key
    processor.rng = torch.Generator()
    return processor


def green_mask(keys: np.ndarray, params: WatermarkParams, key: WatermarkKey) -> np.ndarray:
    """Whether each packed pair is green under `key`, by transformers' own green lists."""
    import torch

    width = _check(params)
    rows = unpack(keys, width)
    targets = rows[:, -1]
    # lefthash seeds on the previous token; selfhash on the whole window, target included.
    seeds = rows[:, :1] if params.seeding_scheme == "lefthash" else rows
    uniq, inverse = np.unique(pack(seeds), return_inverse=True)
    seed_rows = unpack(uniq, seeds.shape[1])
    processor = _keyed_processor(key, params)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(uniq) + 1))
    green = np.zeros(len(keys), dtype=bool)
    vocab_mask = np.zeros(params.vocab_size, dtype=bool)
    for u, seed in enumerate(seed_rows):
        ids = processor._get_greenlist_ids(torch.as_tensor(seed, dtype=torch.long)).numpy()
        vocab_mask[:] = False
        vocab_mask[ids] = True
        idx = order[bounds[u]:bounds[u + 1]]
        green[idx] = vocab_mask[targets[idx]]
    return green


def binomial_test(n_green: int, n: int, gamma: float) -> tuple[float, float, float | None]:
    """z, exact one-sided binomial p = P[X >= n_green], and log10 p (None if it underflows)."""
    from scipy.stats import binom

    if n == 0:
        return 0.0, 1.0, 0.0
    z = (n_green - gamma * n) / math.sqrt(n * gamma * (1 - gamma))
    p = float(binom.sf(n_green - 1, n, gamma))
    log_p = float(binom.logsf(n_green - 1, n, gamma)) / math.log(10)
    return z, p, (log_p if math.isfinite(log_p) else None)


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
