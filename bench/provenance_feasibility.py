"""Feasibility of the radioactivity test on this machine: CPU only, nothing downloaded.

Run by hand (results go into docs/provenance.md):

    .venv/bin/python bench/provenance_feasibility.py --out /tmp/provenance-bench.json

A teacher and an independently pre-trained, smaller student base are built from GPT2Config
with a byte-level BPE tokenizer trained on ../shared/data/prompts (public prompts, read
from disk, never shipped). The teacher answers held-out prompts with and without the
watermark; copies of the student base are fine-tuned on (a) clean answers, (b) 15 %
watermarked answers (after 2 and 6 epochs), (c) 100 % watermarked answers and (d) the
watermarked answers *paraphrased* by a clean model, then tested in generation ("closed")
and reading ("open") mode with the honest scorer and 50 wrong keys.

The paraphraser: the clean teacher re-writes each watermarked answer from the same prompt
while every token of the original answer gets a logit bonus (`--para-bias`), i.e. the
same content words re-sequenced by an unmarked sampler; token-set Jaccard with the
original is reported so it is visibly a rewrite, not unrelated text.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from distillguard import config
from distillguard.provenance import lab
from distillguard.provenance.keys import derive_key
from distillguard.provenance.mark import WatermarkParams, generate_marked
from distillguard.provenance.reading import read_model
from distillguard.provenance.score import Sample, score_samples

PROMPTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts"


class BagBoost(LogitsProcessor):
    """Add `bias` to the tokens of each row's source answer (the paraphraser's guide)."""

    def __init__(self, bags: list[list[int]], bias: float) -> None:
        self.bags, self.bias = [torch.tensor(sorted(set(b)), dtype=torch.long) for b in bags], bias

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.Tensor:
        scores = scores.clone()
        for row, bag in enumerate(self.bags):
            if len(bag):
                scores[row, bag] += self.bias
        return scores


def paraphrase(model, tok, prompts: list[str], sources: list[Sample], bias: float,
               max_new_tokens: int, seed: int) -> list[list[int]]:
    """Unmarked re-generation guided by each source answer's bag of tokens."""
    tok.padding_side = "left"
    torch.manual_seed(seed)
    out: list[list[int]] = []
    for start in range(0, len(prompts), 100):
        enc = tok(prompts[start:start + 100], return_tensors="pt", padding=True,
                  add_special_tokens=False)
        boost = BagBoost([s.completion_ids for s in sources[start:start + 100]], bias)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, top_k=0, max_new_tokens=max_new_tokens,
                                 logits_processor=LogitsProcessorList([boost]),
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            out.append(row[:row.index(tok.eos_token_id)] if tok.eos_token_id in row else row)
    return out


def load_texts(limit_chars: int, seed: int) -> list[str]:
    texts = []
    for path in sorted(PROMPTS.glob("*.jsonl")):
        for line in path.read_text("utf-8").split("\n"):
            if not line.strip():
                continue
            text = json.loads(line).get("text")
            if isinstance(text, str) and len(text.split()) >= 12:
                texts.append(text[:limit_chars])
    random.Random(seed).shuffle(texts)
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--chars", type=int, default=600, help="characters kept per prompt text")
    ap.add_argument("--teacher", default="4x256", help="layers x width")
    ap.add_argument("--student", default="3x192", help="layers x width")
    ap.add_argument("--pretrain-docs", type=int, default=12000)
    ap.add_argument("--teacher-epochs", type=int, default=3)
    ap.add_argument("--student-epochs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2000, help="teacher answers")
    ap.add_argument("--test-prompts", type=int, default=400)
    ap.add_argument("--read-texts", type=int, default=500)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--bias", type=float, default=3.0)
    ap.add_argument("--gamma", type=float, default=0.25)
    ap.add_argument("--para-bias", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    section = dict(config.defaults()["provenance"])
    key = derive_key(b"bench-provider-secret", "campaign:bench")
    params = WatermarkParams(vocab_size=args.vocab, greenlist_ratio=args.gamma, bias=args.bias)

    def log(msg: str) -> None:
        cpu = resource.getrusage(resource.RUSAGE_SELF).ru_utime
        print(f"[{time.time() - t0:7.1f}s wall, {cpu:7.1f}s cpu] {msg}", flush=True)

    texts = load_texts(args.chars, args.seed)
    n = args.pretrain_docs
    teacher_docs, student_docs = texts[:n], texts[n:2 * n]
    rest = texts[2 * n:]
    tok = lab.train_tokenizer(teacher_docs, args.vocab)

    def prompt_of(t: str) -> str:  # the first 16 tokens of a held-out text
        return tok.decode(tok(t, add_special_tokens=False)["input_ids"][:16])

    sample_prompts = [prompt_of(t) for t in rest[:args.samples]]
    test_prompts = [prompt_of(t) for t in rest[args.samples:args.samples + args.test_prompts]]
    eos = tok.eos_token_id
    log(f"tokenizer {len(tok)}; {len(texts):,} texts")
    (tl, tw), (sl, sw) = (map(int, s.split("x")) for s in (args.teacher, args.student))
    teacher = lab.build_model(args.vocab, tl, tw, seed=args.seed + 1)
    loss = lab.train_lm(teacher, lab.pack_rows(lab.encode(tok, teacher_docs), eos, 64),
                        epochs=args.teacher_epochs, lr=2e-3, batch_size=16, seed=1)
    log(f"teacher {args.teacher} loss {loss:.2f}")
    base = lab.build_model(args.vocab, sl, sw, seed=args.seed + 2)
    loss = lab.train_lm(base, lab.pack_rows(lab.encode(tok, student_docs), eos, 64),
                        epochs=args.student_epochs, lr=2e-3, batch_size=16, seed=2)
    log(f"student base {args.student} loss {loss:.2f}")

    p_ids, t_ids = lab.encode(tok, sample_prompts), lab.encode(tok, test_prompts)

    def answers(model, prompts, ids, k, seed):
        comp = generate_marked(model, tok, prompts, k, params, max_new_tokens=args.new_tokens,
                               batch_size=100, seed=seed)
        return [Sample(p, c) for p, c in zip(ids, comp, strict=True)]

    marked = answers(teacher, sample_prompts, p_ids, key, 3)
    clean = answers(teacher, sample_prompts, p_ids, None, 4)
    para = [Sample(p, c) for p, c in zip(p_ids, paraphrase(
        teacher, tok, sample_prompts, marked, args.para_bias, args.new_tokens, 5), strict=True)]
    overlap = sum(len(set(a.completion_ids) & set(b.completion_ids))
                  / max(1, len(set(a.completion_ids) | set(b.completion_ids)))
                  for a, b in zip(marked, para, strict=True)) / len(marked)
    log(f"teacher answers generated; paraphrase token-set Jaccard {overlap:.2f}")
    rows = []

    def record(name: str, mode: str, res) -> None:
        cal = res.calibration
        rows.append({"condition": name, "mode": mode, "pairs": res.tokens_scored,
                     "green": round(res.green_fraction, 4), "z": round(res.z, 2),
                     "p": res.p_value, "cal_mean": round(cal.mean, 2),
                     "cal_sd": round(cal.sd, 2), "verdict": res.verdict})
        log(f"{name:34s} {mode:10s} pairs {res.tokens_scored:6d} green "
            f"{res.green_fraction:.3f} z {res.z:7.2f} p {res.p_value:.3g} "
            f"wrong-key z {cal.mean:+.2f}/{cal.sd:.2f}")

    special = [eos]
    for name, data in (("teacher, watermarked", marked), ("teacher, clean", clean),
                       ("teacher watermarked, paraphrased", para)):
        record(name, "text", score_samples(data, key, params, special, section))
    read_text = [s.completion_ids for s in marked[:args.read_texts] if s.completion_ids]
    rng = random.Random(args.seed)
    mix = [m if rng.random() < 0.15 else c for m, c in zip(marked, clean, strict=True)]

    def evaluate(name: str, model) -> None:
        record(name, "closed", score_samples(answers(model, test_prompts, t_ids, None, 7),
                                             key, params, special, section))
        record(name, "reading", read_model(model, read_text, key, params, special, section))

    for name, data in (("student on clean", clean), ("student on 100% watermarked", marked),
                       ("student on paraphrased watermarked", para)):
        evaluate(f"{name}, 2 epochs", lab.finetune(base, data, epochs=2, lr=1e-3, seed=6))
    model = lab.finetune(base, mix, epochs=2, lr=1e-3, seed=6)
    evaluate("student on 15% watermarked, 2 epochs", model)
    model = lab.finetune(model, mix, epochs=4, lr=5e-4, seed=7)
    evaluate("student on 15% watermarked, 6 epochs", model)
    summary = {"args": {k: str(v) for k, v in vars(args).items()},
               "paraphrase_jaccard": overlap, "seconds": round(time.time() - t0),
               "rows": rows}
    print("\n| condition | mode | pairs scored | green | z | p | wrong-key z mean/sd |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['condition']} | {r['mode']} | {r['pairs']:,} | {r['green']:.3f} | "
              f"{r['z']:.1f} | {r['p']:.2g} | {r['cal_mean']:+.2f} / {r['cal_sd']:.2f} |")
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
