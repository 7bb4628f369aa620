"""Prompt pools per style and capability: rendered once, then picked per row by index.

A *style* is how a set of accounts writes: `organic` (everyone's ordinary traffic), one
`distill:<population>` style per campaign (its own subset of elicitation frames, so a
campaign's prompts share skeletons while slots and paraphrases vary), the shared public
`harness` benchmark, an enterprise `batch:<k>` template and a lab's `coursework:<gid>`.
With a corpus of real prompts (`simulate --prompts`), campaigns draw from its distillation
prompts and ordinary traffic from its organic ones wherever it has enough of a capability.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from distillguard.contract import CAPABILITIES
from distillguard.simulate.accounts import stable_int
from distillguard.simulate.corpus import Corpus
from distillguard.simulate.grammar import Grammar
from distillguard.simulate.populations import POPULATIONS

HARNESS_TASKS = {"reasoning_math": "organic", "coding": "organic", "knowledge_qa": "harness"}
SYSTEM_KINDS = {"app": (0, 1, 2), "generic": (3, 5, 6), "ide": (4,), "tutor": (7,)}
N_APP_PROMPTS = 400
MIN_REAL = 50  # fewer real prompts of a capability than this: the grammar writes it


def system_prompts(grammar: Grammar, seed: int) -> tuple[list[str], dict[str, list[int]]]:
    """Rendered system prompts and, per kind, the indices accounts may pick from."""
    rng = random.Random(stable_int(seed, "system"))
    templates = grammar.styles["system_prompts"]
    texts: list[str] = []
    index: dict[str, list[int]] = {}
    for kind, rows in SYSTEM_KINDS.items():
        n = N_APP_PROMPTS if kind == "app" else 4 * len(rows)
        rendered = grammar.render([templates[r] for r in rows], ["{task}"], n, rng)
        index[kind] = list(range(len(texts), len(texts) + n))
        texts.extend(rendered)
    return texts, index


@dataclass
class PromptBank:
    """All pools concatenated: `matrix[style, category]` is a pool id (-1: none)."""

    matrix: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    flat: pa.ChunkedArray   # one chunk per pool: no concatenation copy of the whole bank
    templates: dict[str, int]

    def pick(self, style: np.ndarray, category: np.ndarray, u: np.ndarray) -> pa.Array:
        pool = self.matrix[style, category]
        if (pool < 0).any():
            raise AssertionError("a row drew a category its style has no pool for")
        idx = self.offset[pool] + (u * self.length[pool]).astype(np.int64)
        return self.flat.take(pa.array(idx)).combine_chunks().cast(pa.string())


def _subset(rng: random.Random, items: list[str], share: float, minimum: int) -> list[str]:
    k = min(len(items), max(minimum, round(share * len(items))))
    return rng.sample(items, k)


def _recipe(grammar: Grammar, style: str, category: str,
            rng: random.Random) -> tuple[list[str], list[str], list[str] | None, list[str] | None]:
    """(frames, tasks, lead-ins, tails) of one pool."""
    kind, _, arg = style.partition(":")
    g = grammar.styles
    if kind == "organic":
        return (grammar.frames("organic", category), grammar.tasks("organic", category),
                g["lead_ins"], g["tails"])
    if kind == "distill":
        breadth = POPULATIONS[arg].breadth
        frames = _subset(rng, grammar.frames("distill", category), breadth, 2)
        tasks = _subset(rng, grammar.tasks("distill", category), max(breadth, 0.5), 3)
        return frames, tasks, None, _subset(rng, g["distill_tails"], breadth, 2)
    if kind == "harness":
        source = HARNESS_TASKS[category]
        tasks = (grammar.tasks("harness") if source == "harness"
                 else grammar.tasks("organic", category))
        return grammar.frames("harness"), tasks, None, None
    if kind == "batch":
        k = int(arg)
        return [grammar.frames("batch")[k]], [grammar.tasks("batch")[k]], None, None
    return (grammar.frames("organic", category),
            _subset(rng, grammar.tasks("organic", category), 0.0, 3), None, g["tails"])


def _size(style: str, expected: float) -> int:
    kind = style.partition(":")[0]
    if kind == "harness":
        return 1500  # a fixed public benchmark: the same questions on every run
    lo, hi, per = {"organic": (2000, 100_000, 3), "distill": (1000, 60_000, 4),
                   "batch": (500, 200_000, 2), "coursework": (200, 20_000, 2)}[kind]
    return int(np.clip(expected / per, lo, hi))


def _real(corpus: Corpus | None, style: str, category: str, rng: random.Random) -> list[str]:
    """The corpus's prompts for this pool: a campaign's share of the distillation prompts
    (its breadth, at least half), or all organic ones; none where it has too few."""
    kind, _, arg = style.partition(":")
    if corpus is None or kind not in ("organic", "distill"):
        return []
    texts = corpus["organic" if kind == "organic" else "distillation"].get(category, [])
    if len(texts) < MIN_REAL:
        return []
    return texts if kind == "organic" else _subset(rng, texts, max(POPULATIONS[arg].breadth, .5), 3)


def build(grammar: Grammar, seed: int, styles: list[str], expected: np.ndarray,
          corpus: Corpus | None = None) -> PromptBank:
    """Render every (style, category) pool with expected traffic; `expected` is styles x 9.

    With a corpus, a campaign's pool is its real prompts alone; an organic pool is all real
    organic prompts, topped up by the grammar to the usual size so prompts recur as often.
    """
    matrix = np.full((len(styles), len(CAPABILITIES)), -1, dtype=np.int64)
    chunks: list[pa.Array] = []
    offsets, lengths = [], []
    total = 0
    templates: dict[str, int] = {}
    for s, style in enumerate(styles):
        for c, category in enumerate(CAPABILITIES):
            if expected[s, c] <= 0 and style != "organic":
                continue
            rng = random.Random(stable_int(seed, "pool", style, category))
            real = _real(corpus, style, category, rng)
            size = 0 if style.startswith("distill") and real else _size(style, expected[s, c])
            frames, tasks, lead_ins, tails = _recipe(grammar, style, category, rng)
            templates[f"{style}/{category}"] = len(real) or len(frames) * len(tasks)
            pool = real + grammar.render(frames, tasks, max(0, size - len(real)), rng,
                                         lead_ins, tails)
            matrix[s, c] = len(offsets)
            offsets.append(total)
            lengths.append(len(pool))
            total += len(pool)
            chunks.append(pa.array(pool, pa.large_string()))
    return PromptBank(matrix, np.array(offsets, np.int64), np.array(lengths, np.int64),
                      pa.chunked_array(chunks, pa.large_string()), templates)
