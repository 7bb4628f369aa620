"""`distillguard provenance ...`: thin Typer commands over the provenance modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from distillguard import config as config_mod
from distillguard.cli import console, guarded
from distillguard.errors import InputError

provenance_app = typer.Typer(
    help="Proof of copying: keyed output watermarks, radioactivity test, black-box compare.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

_CONFIG = typer.Option(None, "--config", help="TOML file overriding [provenance] defaults.")
_SECRET = typer.Option(None, "--secret-file",
                       help="File with the provider secret (else the env var in config).")
_KEY = typer.Option(..., "--key-id", help="Key id, e.g. campaign:c-0042 or cluster:17.")
_GENERATOR = typer.Option(..., "--generator",
                          help="Our model directory (config.json + tokenizer; weights are "
                               "needed only by mark).")


def _setup(config: Path | None, secret_file: Path | None, key_id: str,
           generator: Path) -> tuple[dict[str, Any], Any, Any, Any]:
    from distillguard.provenance.corpus import load_generator
    from distillguard.provenance.keys import derive_key, load_secret
    from distillguard.provenance.mark import WatermarkParams

    section = config_mod.load(config)["provenance"]
    gen = load_generator(generator)
    key = derive_key(load_secret(secret_file, section["secret_env"]), key_id)
    return section, gen, key, WatermarkParams.from_config(section, gen.vocab_size)


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", "utf-8")
        console.print(f"written: {path}")


def _show(result: Any) -> None:
    cal = result.calibration
    table = Table("key", "mode", "pairs scored", "green (null)", "z", "p-value",
                  f"wrong-key z (n={cal.n_keys})", "verdict",
                  title="distillguard provenance")
    table.add_row(result.key_id, result.mode, f"{result.tokens_scored:,}",
                  f"{result.green_fraction:.3f} ({result.gamma:.3f})", f"{result.z:.2f}",
                  f"{result.p_value:.3g}", f"mean {cal.mean:+.2f}, sd {cal.sd:.2f}",
                  result.verdict)
    console.print(table)
    pairs = result.pairs
    console.print(f"pairs: {pairs.candidate:,} candidates, {pairs.special:,} touching special "
                  f"tokens, {pairs.in_prompt:,} copied from the prompt/context, "
                  f"{pairs.duplicate:,} repeats scored once")
    console.print(result.verdict_text)


def _finish(result: Any, out: Path | None) -> None:
    _show(result)
    _write_json(out, result.to_json())
    if result.verdict == "learned":
        raise typer.Exit(code=1)


@provenance_app.command()
@guarded
def mark(
    key_id: str = _KEY,
    generator: Path = _GENERATOR,
    prompts: Path = typer.Option(..., "--prompts", help="JSONL with a `prompt` per row."),
    out: Path = typer.Option(..., "--out", help="JSONL of prompt, completion, key_id."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    secret_file: Path = _SECRET,
    config: Path = _CONFIG,
) -> None:
    """Generate watermarked answers with a local model (what the serving hook does live)."""
    from transformers import AutoModelForCausalLM

    from distillguard.provenance.corpus import read_prompts
    from distillguard.provenance.mark import generate_marked

    _, gen, key, params = _setup(config, secret_file, key_id, generator)
    texts = read_prompts(prompts)
    model = AutoModelForCausalLM.from_pretrained(str(generator), local_files_only=True)
    with console.status(f"generating {len(texts):,} marked answers"):
        ids = generate_marked(model, gen.tokenizer, texts, key, params,
                              max_new_tokens=max_new_tokens, seed=seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as handle:
        for prompt, completion in zip(texts, ids, strict=True):
            row = {"prompt": prompt, "completion": gen.tokenizer.decode(completion),
                   "key_id": key.key_id}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    console.print(f"{len(texts):,} answers marked with {key.key_id!r} written to {out}")


@provenance_app.command("test")
@guarded
def test_(
    key_id: str = _KEY,
    samples: Path = typer.Option(..., "--samples",
                                 help="Suspect generations JSONL: completion [+ prompt]."),
    generator: Path = _GENERATOR,
    campaign_id: str = typer.Option(None, "--campaign-id",
                                    help="Campaign to file the result under (default: from "
                                         "a campaign:<id> key id)."),
    out: Path = typer.Option(None, "--out", help="Write provenance.json here, e.g. "
                                                 "RUN_DIR/provenance/<campaign_id>.json."),
    secret_file: Path = _SECRET,
    config: Path = _CONFIG,
) -> None:
    """Radioactivity test of a suspect's text (exit 1 when the watermark is found)."""
    from distillguard.provenance.corpus import read_samples
    from distillguard.provenance.score import score_samples

    section, gen, key, params = _setup(config, secret_file, key_id, generator)
    rows = read_samples(samples, gen.tokenizer)
    if not rows:
        raise InputError("no samples", file=str(samples))
    with console.status(f"scoring {len(rows):,} samples"):
        result = score_samples(rows, key, params, gen.special_ids, section, campaign_id)
    _finish(result, out)


@provenance_app.command()
@guarded
def read(
    key_id: str = _KEY,
    model: Path = typer.Option(..., "--model", help="Open-weight suspect model directory."),
    text: Path = typer.Option(..., "--text", help="Our marked answers JSONL (`completion`)."),
    generator: Path = _GENERATOR,
    campaign_id: str = typer.Option(None, "--campaign-id"),
    out: Path = typer.Option(None, "--out", help="Write provenance.json here."),
    secret_file: Path = _SECRET,
    config: Path = _CONFIG,
) -> None:
    """Reading mode: the suspect reads our marked text; its predictions are scored."""
    from transformers import AutoModelForCausalLM

    from distillguard.provenance.corpus import read_samples
    from distillguard.provenance.reading import read_model

    section, gen, key, params = _setup(config, secret_file, key_id, generator)
    texts = [s.completion_ids for s in read_samples(text, gen.tokenizer) if s.completion_ids]
    if not texts:
        raise InputError("no marked text", file=str(text))
    suspect = AutoModelForCausalLM.from_pretrained(str(model), local_files_only=True)
    suspect.eval()
    with console.status(f"reading {len(texts):,} marked texts"):
        result = read_model(suspect, texts, key, params, gen.special_ids, section, campaign_id)
    _finish(result, out)


@provenance_app.command("compare")
@guarded
def compare_(
    answers: Path = typer.Option(..., "--answers",
                                 help="JSONL rows {model, probe_id, answer}; several "
                                      "answers per model and probe allowed."),
    ours: str = typer.Option(..., "--ours", help="Our model's name in the answers file."),
    suspect: str = typer.Option(..., "--suspect", help="The suspect's name."),
    reference: list[str] = typer.Option(None, "--reference",
                                        help="Reference model (repeatable; default: all "
                                             "other models in the file)."),
    out: Path = typer.Option(None, "--out", help="Write the result JSON here."),
    config: Path = _CONFIG,
) -> None:
    """Black-box provenance: is the suspect closer to ours than reference models are?"""
    from distillguard.provenance.compare import compare, read_answers

    section = config_mod.load(config)["provenance"]
    result = compare(read_answers(answers), ours, suspect, reference,
                     alpha=float(section["compare_alpha"]))
    table = Table("probe", "sim ours", "sim refs", "p", "p (Holm)", "rejected",
                  title=f"{suspect} vs {ours} (refs: {', '.join(result.references)})")
    for p in sorted(result.probes, key=lambda p: p.p_value)[:20]:
        table.add_row(p.probe_id, f"{p.sim_ours:.3f}", f"{p.sim_references:.3f}",
                      f"{p.p_value:.3g}", f"{p.p_holm:.3g}", "yes" if p.rejected else "")
    console.print(table)
    console.print(f"{result.probes_rejected} of {result.probes_tested} probes rejected "
                  f"({result.probes_skipped} skipped); closer to ours on "
                  f"{result.closer_to_ours:.0%}")
    console.print(result.verdict_text)
    _write_json(out, result.to_json())
    if result.verdict == "related":
        raise typer.Exit(code=1)
