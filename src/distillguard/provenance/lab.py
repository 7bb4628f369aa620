"""Tiny local language models for demonstrations, tests and the feasibility bench.

Everything is built on this machine, nothing downloaded: a byte-level BPE tokenizer
trained with `tokenizers`, GPT-2 shaped models from `GPT2Config`, a plain training loop,
and a synthetic Markov "language" whose next-word entropy leaves the watermark room to act.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EOS = "<|endoftext|>"


def synthetic_corpus(n_docs: int, seed: int = 0, draw: int = 0, n_words: int = 300,
                     fanout: int = 12, sentences: int = 5) -> list[str]:
    """Documents from a random word-level Markov chain (pseudo-words, Zipf-ish successors).

    `seed` fixes the language; `draw` picks an independent set of documents from it.
    """
    rng = np.random.default_rng(seed)
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
    words = sorted({"".join(rng.choice(syllables, size=rng.integers(1, 4)))
                    for _ in range(n_words * 2)})[:n_words]
    successors = rng.integers(0, len(words), size=(len(words), fanout))
    weights = rng.dirichlet(np.full(fanout, 0.7), size=len(words))
    rng_docs = np.random.default_rng([seed, draw])
    out = []
    for _ in range(n_docs):
        w = int(rng_docs.integers(len(words)))
        doc = []
        for _ in range(sentences):
            sentence = [words[w]]
            for _ in range(int(rng_docs.integers(6, 18))):
                w = int(successors[w, rng_docs.choice(fanout, p=weights[w])])
                sentence.append(words[w])
            doc.append(" ".join(sentence) + ".")
        out.append(" ".join(doc))
    return out


def train_tokenizer(texts: Sequence[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with exactly `vocab_size` entries (EOS doubles as pad/BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, bos_token=EOS,
                                   pad_token=EOS, unk_token=EOS)


def build_model(vocab_size: int, n_layer: int, n_embd: int, seed: int,
                n_positions: int = 256) -> Any:
    """A randomly initialised GPT-2 shaped causal LM (deterministic in `seed`).

    Token id 0 is `EOS` (the tokenizer's only special token). Input and output embeddings
    are untied: at this size a separate output matrix learns next-token statistics several
    times faster, which keeps the CI test short.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=vocab_size, n_layer=n_layer, n_embd=n_embd,
                     n_head=max(1, n_embd // 64), n_positions=n_positions, bos_token_id=0,
                     eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    return GPT2LMHeadModel(cfg)


def pack_rows(sequences: Sequence[Sequence[int]], eos: int, seq_len: int) -> list[list[int]]:
    """Documents joined with EOS and cut into full `seq_len` rows (efficient pre-training)."""
    flat = [t for s in sequences for t in [*s, eos]]
    return [flat[i:i + seq_len] for i in range(0, len(flat) - seq_len + 1, seq_len)]


def sample_rows(sequences: Sequence[Sequence[int]], eos: int, seq_len: int) -> list[list[int]]:
    """One row per sample, EOS-terminated (fine-tuning on prompt + completion pairs)."""
    return [[*list(s)[: seq_len - 1], eos] for s in sequences if len(s)]


def train_lm(model: Any, rows: Sequence[Sequence[int]], *, epochs: int, lr: float,
             batch_size: int = 32, seed: int = 0) -> float:
    """Next-token training on id rows (right-padded, pads ignored); returns the last loss."""
    import torch

    pad = model.config.pad_token_id
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    steps = epochs * ((len(rows) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1),
                                                pct_start=0.1)
    model.train()
    loss = float("nan")
    for _ in range(epochs):
        for b in torch.randperm(len(rows), generator=gen).split(batch_size):
            batch = [rows[i] for i in b.tolist()]
            width = max(len(r) for r in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            for i, r in enumerate(batch):
                ids[i, : len(r)] = torch.tensor(r)
                labels[i, : len(r)] = torch.tensor(r)
            out = model(input_ids=ids, labels=labels).loss
            opt.zero_grad()
            out.backward()
            opt.step()
            sched.step()
            loss = float(out.detach())
    model.eval()
    return loss


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def finetune(base: Any, samples: Sequence[Any], *, epochs: int, lr: float, seed: int,
             seq_len: int = 128, batch_size: int = 16) -> Any:
    """A copy of `base` trained on prompt + completion of each `score.Sample`."""
    import copy

    model = copy.deepcopy(base)
    rows = sample_rows([[*s.prompt_ids, *s.completion_ids] for s in samples],
                       model.config.eos_token_id, seq_len)
    train_lm(model, rows, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return model
