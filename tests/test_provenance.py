"""distillguard.provenance: keys, honest scoring, calibration, reading, compare, CLI.

The slow test builds a tiny teacher and students locally (no downloads) and checks the
radioactivity test end to end with margins; the rest are fast unit tests.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from distillguard import config  # noqa: E402
from distillguard.cli import app  # noqa: E402
from distillguard.errors import InputError  # noqa: E402
from distillguard.provenance import lab  # noqa: E402
from distillguard.provenance.calibration import calibrate  # noqa: E402
from distillguard.provenance.compare import compare, holm  # noqa: E402
from distillguard.provenance.greenlist import binomial_test, green_mask, pack, unpack  # noqa: E402
from distillguard.provenance.keys import WatermarkKey, derive_key  # noqa: E402
from distillguard.provenance.mark import (  # noqa: E402
    WatermarkParams,
    generate_marked,
    logits_processor,
    processor_for_account,
    request_callable,
)
from distillguard.provenance.reading import read_model, text_keys  # noqa: E402
from distillguard.provenance.score import PairCounts, Sample, corpus_keys, score_samples  # noqa: E402

SECTION = dict(config.defaults()["provenance"], calibration_keys=24, min_tokens=50)
KEY = derive_key(b"provider-secret", "campaign:c-1")
SMALL = WatermarkParams(vocab_size=64)


def test_keys_are_deterministic_distinct_and_in_range():
    assert derive_key(b"s", "campaign:a") == derive_key(b"s", "campaign:a")
    values = {derive_key(s, k).hashing_key for s in (b"s", b"t")
              for k in ("campaign:a", "campaign:b", "cluster:1")}
    assert len(values) == 6
    assert all(0 < v < 2 ** 62 for v in values)
    with pytest.raises(InputError):
        derive_key(b"", "campaign:a")


def test_gamma_is_the_exact_green_share_transformers_uses():
    assert WatermarkParams(vocab_size=1000).gamma == 0.25
    assert WatermarkParams(vocab_size=1023).gamma == 255 / 1023
    with pytest.raises(InputError):
        WatermarkParams(vocab_size=64, seeding_scheme="bogus")


def test_green_mask_matches_the_generation_processor():
    params = WatermarkParams(vocab_size=97, bias=1.0)
    rng = np.random.default_rng(0)
    for key in (KEY, derive_key(b"s", "cluster:7"), KEY):
        proc = logits_processor(key, params)  # freshly built, as generate() builds it
        for _ in range(10):
            seq = torch.tensor(rng.integers(0, 97, size=(1, 5)))
            boosted = proc(seq, torch.zeros(1, 97))[0] > 0
            rows = np.stack([np.full(97, int(seq[0, -1])), np.arange(97)], axis=1)
            assert np.array_equal(green_mask(pack(rows), params, key), boosted.numpy())


def test_request_callable_marks_like_generate():
    params = WatermarkParams(vocab_size=50, bias=5.0)
    proc = logits_processor(KEY, params)
    hook = request_callable(proc, [3, 4])
    out = hook([7], torch.zeros(50))
    expected = proc(torch.tensor([[3, 4, 7]]), torch.zeros(1, 50))[0]
    assert torch.equal(out, expected)
    assert int((out > 0).sum()) == int(50 * 0.25)


def test_serving_hook_marks_only_flagged_accounts():
    params = WatermarkParams(vocab_size=50)
    flagged = {"acct-1": "campaign:c-1"}
    assert processor_for_account("acct-2", flagged, b"provider-secret", params) is None
    proc = processor_for_account("acct-1", flagged, b"provider-secret", params)
    assert proc.hash_key == KEY.hashing_key


def test_pack_roundtrip():
    rows = np.array([[0, 5], [63, 1], [2 ** 21 - 1, 7]])
    assert np.array_equal(unpack(pack(rows), 2), rows)


def test_repeats_across_samples_score_once():
    one = Sample([1, 2], [10, 11, 12, 13, 10, 11])
    keys_one, _ = corpus_keys([one], SMALL, [])
    keys_many, counts = corpus_keys([one] * 50, SMALL, [])
    assert np.array_equal(keys_one, keys_many)
    # (2,10) (10,11) (11,12) (12,13) (13,10) then (10,11) again inside the sample
    assert len(keys_one) == 5
    assert counts.duplicate == 50 * 6 - 5
    result = score_samples([one] * 50, KEY, SMALL, [], SECTION)
    assert result.tokens_scored == 5


def test_prompt_padding_and_bos_pairs_never_score():
    bos, pad = 0, 63
    # prompt pairs (5,6) (6,7) also appear in the completion; pad/BOS pairs everywhere
    sample = Sample([bos, 5, 6, 7], [5, 6, 20, 6, 7, 21, pad, pad])
    keys, counts = corpus_keys([sample], SMALL, [bos, pad])
    rows = {tuple(r) for r in unpack(keys, 2)}
    assert rows == {(7, 5), (6, 20), (20, 6), (7, 21)}
    assert counts.in_prompt == 2 and counts.special == 2
    assert all(bos not in r and pad not in r for r in rows)
    # prompt tokens themselves are never targets
    keys, _ = corpus_keys([Sample([bos, 1, 2, 3, 4], [])], SMALL, [bos])
    assert len(keys) == 0


def test_token_outside_vocab_is_an_input_error():
    with pytest.raises(InputError, match="vocabulary"):
        corpus_keys([Sample([1], [2, 64])], SMALL, [])


def test_binomial_test_is_exact():
    z, p, log_p = binomial_test(3, 3, 0.5)
    assert p == pytest.approx(0.125)
    assert log_p == pytest.approx(math.log10(0.125))
    assert z == pytest.approx(3 ** 0.5)


def test_calibration_needs_twenty_keys_and_is_standard_normal_on_random_pairs():
    rng = np.random.default_rng(1)
    params = WatermarkParams(vocab_size=512)
    keys = np.unique(pack(rng.integers(0, 512, size=(3000, 2))))
    with pytest.raises(InputError):
        calibrate(keys, params, KEY, 10, 0, 0.7, [0.5, 1.5])
    cal = calibrate(keys, params, KEY, 30, 0, 0.7, [0.5, 1.5])
    assert cal.ok and abs(cal.mean) < 0.7 and 0.5 < cal.sd < 1.5


def test_reading_skips_pairs_copied_from_the_text_read_so_far():
    text = [5, 6, 7, 5, 8]
    # predictions after 5, 6, 7, 5, 8: the 4th (after 5) predicts 6, already seen as (5, 6)
    predicted = np.array([9, 10, 11, 6, 12])
    counts = PairCounts()
    keys = text_keys(text, predicted, SMALL, np.array([0]), counts)
    rows = {tuple(r) for r in unpack(keys, 2)}
    assert rows == {(5, 9), (6, 10), (7, 11), (8, 12)}
    assert counts.in_prompt == 1
    short = text_keys([14], np.array([3]), SMALL, np.array([0]), PairCounts())
    assert [tuple(r) for r in unpack(short, 2)] == [(14, 3)]


def test_holm_matches_the_step_down_definition():
    adjusted = holm([0.01, 0.04, 0.03, 0.5])
    assert np.allclose(adjusted, [0.04, 0.09, 0.09, 0.5])


def _answers(seed: int) -> dict[str, dict[str, list[str]]]:
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(400)]
    table: dict[str, dict[str, list[str]]] = {m: {} for m in ("ours", "copy", "other", "r1",
                                                              "r2")}
    for probe in range(12):
        base = {m: list(rng.choice(vocab, size=30)) for m in ("ours", "other", "r1", "r2")}
        for model in table:
            source = base["ours"] if model == "copy" else base[model]
            table[model][f"p{probe}"] = [
                " ".join(w if rng.random() < 0.7 else str(rng.choice(vocab)) for w in source)
                for _ in range(4)]
    return table


def test_compare_finds_the_copy_and_clears_the_unrelated():
    answers = _answers(0)
    related = compare(answers, "ours", "copy", ["r1", "r2"])
    assert related.verdict == "related" and related.probes_rejected >= 6
    unrelated = compare(answers, "ours", "other", ["r1", "r2"])
    assert unrelated.verdict == "not_shown" and unrelated.probes_rejected == 0


@pytest.fixture(scope="module")
def generator_dir(tmp_path_factory):
    """A generator directory as the CLI reads it: tokenizer, config.json and (random) weights."""
    out = tmp_path_factory.mktemp("generator")
    tok = lab.train_tokenizer(lab.synthetic_corpus(150, seed=3), 300)
    tok.save_pretrained(out)
    lab.build_model(300, 1, 32, seed=0).save_pretrained(out)
    return out


def _invoke(*args: str):
    return CliRunner().invoke(app, ["provenance", *args])


def test_cli_mark_then_test_and_read(generator_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILLGUARD_PROVENANCE_SECRET", "provider-secret")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": d[:12]}) + "\n"
                               for d in lab.synthetic_corpus(40, seed=3, draw=2)))
    marked = tmp_path / "marked.jsonl"
    res = _invoke("mark", "--key-id", "campaign:c-1", "--generator", str(generator_dir),
                  "--prompts", str(prompts), "--out", str(marked), "--max-new-tokens", "24")
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in marked.read_text().splitlines()]
    assert len(rows) == 40 and rows[0]["key_id"] == "campaign:c-1"
    out = tmp_path / "provenance" / "c-1.json"
    res = _invoke("test", "--key-id", "campaign:c-1", "--samples", str(marked),
                  "--generator", str(generator_dir), "--out", str(out))
    assert res.exit_code == 1, res.output  # finding
    data = json.loads(out.read_text())
    assert data["verdict"] == "learned" and data["p_value"] < 1e-20
    other = tmp_path / "other.json"
    res = _invoke("test", "--key-id", "campaign:c-2", "--samples", str(marked),
                  "--generator", str(generator_dir), "--out", str(other))
    assert res.exit_code == 0 and json.loads(other.read_text())["verdict"] == "not_detected"
    # reading mode: the (never trained) generator itself learned nothing from the marked text
    res = _invoke("read", "--key-id", "campaign:c-1", "--model", str(generator_dir),
                  "--text", str(marked), "--generator", str(generator_dir))
    assert res.exit_code == 0, res.output


def test_cli_compare(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(
        json.dumps({"model": m, "probe_id": p, "answer": a}) + "\n"
        for m, probes in _answers(1).items() for p, texts in probes.items() for a in texts))
    out = tmp_path / "compare.json"
    res = _invoke("compare", "--answers", str(answers), "--ours", "ours", "--suspect", "copy",
                  "--reference", "r1", "--reference", "r2", "--out", str(out))
    assert res.exit_code == 1, res.output
    assert json.loads(out.read_text())["verdict"] == "related"
    res = _invoke("compare", "--answers", str(answers), "--ours", "ours", "--suspect", "nobody")
    assert res.exit_code == 2


def test_cli_test_writes_provenance_json(generator_dir, tmp_path, monkeypatch):
    gen = generator_dir
    monkeypatch.setenv("DISTILLGUARD_PROVENANCE_SECRET", "provider-secret")
    samples = tmp_path / "suspect.jsonl"
    docs = lab.synthetic_corpus(60, seed=3, draw=1)
    samples.write_text("".join(json.dumps({"prompt": d[:10], "completion": d}) + "\n"
                               for d in docs))
    out = tmp_path / "run" / "provenance" / "c-1.json"
    res = _invoke("test", "--key-id", "campaign:c-1", "--samples", str(samples),
                  "--generator", str(gen), "--out", str(out))
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["campaign_id"] == "c-1" and data["key_id"] == "campaign:c-1"
    assert data["tokens_scored"] > 0 and data["p_value"] > 1e-3
    assert data["verdict"] in ("not_detected", "insufficient")
    assert data["calibration"]["n_keys"] >= 20
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"completion_ids": [1, 2, 99999]}\n')
    res = _invoke("test", "--key-id", "campaign:c-1", "--samples", str(bad),
                  "--generator", str(gen))
    assert res.exit_code == 2 and "vocabulary" in res.output


@pytest.fixture(scope="module")
def radioactivity():
    """Teacher, watermarked/clean samples and students at CI size (fixed seeds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic, and no oversubscription on shared cores
    docs = lab.synthetic_corpus(1200, seed=1)
    tok = lab.train_tokenizer(docs, 1024)
    rows = lab.pack_rows(lab.encode(tok, docs), tok.eos_token_id, 32)
    teacher = lab.build_model(1024, 2, 128, seed=1)
    lab.train_lm(teacher, rows, epochs=2, lr=3e-3, batch_size=16, seed=1)
    student_base = copy.deepcopy(teacher)
    lab.train_lm(teacher, rows, epochs=1, lr=2e-3, batch_size=16, seed=2)
    params = WatermarkParams(vocab_size=1024, bias=3.0)

    train_txt = [" ".join(d.split()[:3]) for d in lab.synthetic_corpus(300, seed=1, draw=10)]
    test_txt = [" ".join(d.split()[:3]) for d in lab.synthetic_corpus(200, seed=1, draw=20)]
    train_ids, test_ids = lab.encode(tok, train_txt), lab.encode(tok, test_txt)
    out = {}
    for name, key in (("marked", KEY), ("clean", None)):
        comp = generate_marked(teacher, tok, train_txt, key, params, max_new_tokens=48,
                               batch_size=100, seed=3)
        out[f"teacher_{name}"] = [Sample(p, c) for p, c in zip(train_ids, comp, strict=True)]
        student = lab.finetune(student_base, out[f"teacher_{name}"], epochs=3, lr=2e-3,
                               seed=4, seq_len=64)
        comp = generate_marked(student, tok, test_txt, None, params, max_new_tokens=48,
                               batch_size=100, seed=5)
        out[f"student_{name}"] = [Sample(p, c) for p, c in zip(test_ids, comp, strict=True)]
        out[f"model_{name}"] = student
    out["special"] = [tok.eos_token_id]
    out["params"] = params
    yield out
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_radioactivity_end_to_end(radioactivity):
    r = radioactivity
    results = {name: score_samples(r[name], KEY, r["params"], r["special"], SECTION)
               for name in ("teacher_marked", "teacher_clean", "student_marked",
                            "student_clean")}
    for name, res in results.items():
        print(name, res.tokens_scored, round(res.green_fraction, 3), round(res.z, 2),
              res.p_value, res.calibration)
    assert results["teacher_marked"].p_value < 1e-20
    assert results["teacher_clean"].p_value > 1e-3
    assert results["student_clean"].p_value > 1e-3
    assert results["student_marked"].p_value < 1e-4
    for res in results.values():
        cal = res.calibration
        assert cal.n_keys >= 20 and abs(cal.mean) <= 0.7 and 0.5 <= cal.sd <= 1.5
    marked_text = [s.completion_ids for s in r["teacher_marked"][:200]]
    reading = {name: read_model(r[f"model_{name}"], marked_text, KEY, r["params"], r["special"],
                                SECTION) for name in ("marked", "clean")}
    print({n: (x.tokens_scored, x.z, x.p_value) for n, x in reading.items()})
    assert reading["marked"].p_value < 1e-4
    assert reading["clean"].p_value > 1e-3
    wrong = WatermarkKey("campaign:other", derive_key(b"other", "x").hashing_key)
    assert score_samples(r["student_marked"], wrong, r["params"], r["special"],
                         SECTION).p_value > 1e-3
