"""Green-list membership by transformers' own function, and the binomial statistic.

A scored pair is packed into one int64 (21 bits per token id) so corpus-wide
de-duplication is a single `np.unique`.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.mark import WatermarkParams, logits_processor

_BITS = 21  # bits per token id in a packed pair key
_MAX_WIDTH = 3  # 3 * 21 bits still fit a signed int64


def window_width(params: WatermarkParams) -> int:
    """Tokens that fix one pair's green membership: (previous, target) for lefthash
    (transformers seeds it on the last token only), the last `context_width` tokens
    ending at the target for selfhash."""
    return 2 if params.seeding_scheme == "lefthash" else params.context_width


def check_shape(params: WatermarkParams) -> int:
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


def windows(ids: np.ndarray, width: int) -> np.ndarray:
    if len(ids) < width:
        return np.empty((0, width), dtype=np.int64)
    return np.lib.stride_tricks.sliding_window_view(ids, width)


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

    width = check_shape(params)
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
