"""Reading mode for open-weight suspects: feed our watermarked text, score its predictions.

The suspect reads text we generated under the key; at each position we take its top-1
next-token prediction and score the (our context, its prediction) pair. A model that never
trained on the marked stream predicts independently of the green lists (the green list
at a position depends on the key and the previous token, never on what the model sees),
so the null is exactly the binomial one. Exception handled here: a prediction can copy a
pair already present earlier in the same text (in-context copying), so such pairs are not
scored. Corpus-wide de-duplication and special-token exclusion as in `score`.

The suspect must share the generator's tokenizer (token ids are scored in our vocabulary);
for other suspects use the generation test on their re-tokenized text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from distillguard.errors import InputError
from distillguard.provenance.greenlist import pack, window_width
from distillguard.provenance.keys import WatermarkKey
from distillguard.provenance.mark import WatermarkParams
from distillguard.provenance.score import PairCounts, ProvenanceResult, evaluate_keys


def predictions(model: Any, texts: Sequence[Sequence[int]], vocab_size: int,
                batch_size: int = 16) -> list[np.ndarray]:
    """Top-1 next-token prediction at every position of each text (restricted to our vocab)."""
    import torch

    if model.config.get_text_config().vocab_size < vocab_size:
        raise InputError("the suspect's vocabulary is smaller than the generator's: reading "
                         "mode needs the generator's tokenizer")
    limit = getattr(model.config, "n_positions", None) or getattr(
        model.config, "max_position_embeddings", 1 << 30)
    out: list[np.ndarray] = []
    for start in range(0, len(texts), batch_size):
        batch = [list(t)[:limit] for t in texts[start:start + batch_size]]
        width = max(len(t) for t in batch)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, t in enumerate(batch):
            ids[i, :len(t)] = torch.tensor(t, dtype=torch.long)
            mask[i, :len(t)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[..., :vocab_size]
        best = logits.argmax(-1).numpy()
        out.extend(best[i, :len(t)] for i, t in enumerate(batch))
    return out


def text_keys(text: Sequence[int], predicted: np.ndarray, params: WatermarkParams,
              special: np.ndarray, counts: PairCounts) -> np.ndarray:
    """Packed (context, prediction) keys of one text that may be scored."""
    ids = np.asarray(text, dtype=np.int64)[:len(predicted)]
    width = window_width(params)
    # prediction at t targets position t + 1; seeding needs context_width tokens before it
    t = np.arange(max(params.context_width - 1, width - 2), len(ids))
    if len(t) == 0:
        return np.empty(0, dtype=np.int64)
    rows = np.concatenate([np.stack([ids[t - j] for j in range(width - 2, -1, -1)], axis=1)
                           if width > 1 else np.empty((len(t), 0), dtype=np.int64),
                           predicted[t, None].astype(np.int64)], axis=1)
    counts.candidate += len(rows)
    clean = ~np.isin(rows, special).any(axis=1)
    counts.special += int((~clean).sum())
    keys, t = pack(rows[clean]), t[clean]
    # in-context copying: the same pair already seen in the text read so far
    if len(ids) < width:
        return keys
    seen_keys, first = np.unique(pack(np.lib.stride_tricks.sliding_window_view(ids, width)),
                                 return_index=True)
    pos = np.searchsorted(seen_keys, keys)
    hit = (pos < len(seen_keys)) & (seen_keys[np.minimum(pos, len(seen_keys) - 1)] == keys)
    copied = hit & (first[np.minimum(pos, len(first) - 1)] + width - 1 <= t)
    counts.in_prompt += int(copied.sum())
    return keys[~copied]


def read_model(model: Any, texts: Sequence[Sequence[int]], key: WatermarkKey,
               params: WatermarkParams, special_ids: Iterable[int], section: dict[str, Any],
               campaign_id: str | None = None) -> ProvenanceResult:
    """Open-model test: are the suspect's predictions on our marked text green under `key`?"""
    special = np.asarray(sorted(set(special_ids)), dtype=np.int64)
    counts = PairCounts()
    preds = predictions(model, texts, params.vocab_size)
    parts = [text_keys(t, p, params, special, counts) for t, p in zip(texts, preds, strict=True)]
    keys = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
    unique = np.unique(keys)
    counts.duplicate = len(keys) - len(unique)
    return evaluate_keys(unique, counts, key, params, section, "reading", campaign_id)
