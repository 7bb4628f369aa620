"""Inputs of the provenance commands: the generator's spec and JSONL text samples."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distillguard.errors import InputError
from distillguard.jsonl import read_jsonl
from distillguard.provenance.score import Sample


@dataclass
class Generator:
    """What scoring needs from our generator: its tokenizer, exact vocab size, special ids."""

    tokenizer: Any
    vocab_size: int
    special_ids: frozenset[int]


def load_generator(path: Path) -> Generator:
    """Read `config.json` and the tokenizer of a local model directory (no weights loaded).

    The vocab size is the model's logits width, which transformers' watermark uses; it can
    differ from the tokenizer's length.
    """
    from transformers import AutoTokenizer

    cfg_path = Path(path) / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text("utf-8"))
    except FileNotFoundError as exc:
        raise InputError("generator directory has no config.json", file=str(cfg_path)) from exc
    text_cfg = cfg.get("text_config") or cfg
    if not isinstance(text_cfg.get("vocab_size"), int):
        raise InputError("config.json has no integer vocab_size", file=str(cfg_path))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load the tokenizer: {exc}", file=str(path)) from exc
    special = set(tokenizer.all_special_ids)
    special |= {text_cfg[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")
                if isinstance(text_cfg.get(k), int)}
    return Generator(tokenizer=tokenizer, vocab_size=int(text_cfg["vocab_size"]),
                     special_ids=frozenset(special))


def _ids(tokenizer: Any, row: dict[str, Any], name: str, path: Path, row_no: int,
         required: bool) -> list[int]:
    ids = row.get(f"{name}_ids")
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(t, int) for t in ids):
            raise InputError("must be a list of integers", file=str(path), row=row_no,
                             column=f"{name}_ids")
        return ids
    text = row.get(name)
    if text is None and not required:
        return []
    if not isinstance(text, str):
        raise InputError(f"missing text (give {name!r} or {name + '_ids'!r})", file=str(path),
                         row=row_no, column=name)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def read_samples(path: Path, tokenizer: Any) -> list[Sample]:
    """Suspect generations: rows with `completion` (text) or `completion_ids`, and optionally
    `prompt` / `prompt_ids`, tokenized with the generator's tokenizer."""
    return [Sample(_ids(tokenizer, row, "prompt", path, n, False),
                   _ids(tokenizer, row, "completion", path, n, True))
            for n, row in read_jsonl(path)]


def read_prompts(path: Path) -> list[str]:
    """Prompts from rows with a `prompt` (or `text`) string."""
    out = []
    for n, row in read_jsonl(path):
        text = row.get("prompt", row.get("text"))
        if not isinstance(text, str) or not text:
            raise InputError("missing prompt text", file=str(path), row=n, column="prompt")
        out.append(text)
    return out
