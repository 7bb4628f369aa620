"""Real prompt text for the simulator: `simulate --prompts DIR`.

The packaged grammar writes every prompt, and the detector was developed on it. A corpus
of real prompts (JSON lines with `text`, `kind` = organic | distillation, `category`, as
in the project's test data) replaces the grammar's text where it has rows: campaigns draw
from the real distillation prompts of their capabilities, everyone's ordinary traffic
from the real organic ones. The detector then meets text it was not written against;
accounts, timing and networks stay the simulator's. Nothing is downloaded or shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distillguard.errors import InputError
from distillguard.jsonl import read_jsonl

KINDS = ("organic", "distillation")

# The corpus's categories (upstream labels or a keyword guess) on the contract's capabilities.
CATEGORY = {
    "coding": "coding", "agentic_tool_use": "agentic_tool_use", "math": "reasoning_math",
    "reasoning": "reasoning_math", "grading": "grading_reward", "safety": "safety_sensitive",
    "writing": "writing", "qa": "knowledge_qa", "roleplay": "chat_other", "chat": "chat_other",
    "other": "chat_other", "vision": "vision",
}

Corpus = dict[str, dict[str, list[str]]]  # kind -> capability -> texts


def load(folder: Path) -> Corpus:
    """Every `*.jsonl` under `folder`, in name order, by kind and capability."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise InputError("no *.jsonl prompt files here", file=str(folder))
    corpus: Corpus = {kind: {} for kind in KINDS}
    for path in files:
        for row, record in read_jsonl(path):
            text, kind, category = _fields(record, path, row)
            corpus[kind].setdefault(CATEGORY[category], []).append(text)
    return corpus


def _fields(record: dict[str, Any], path: Path, row: int) -> tuple[str, str, str]:
    """(text, kind, category) of one line, or an error naming the file, row and field."""
    text, kind, category = record.get("text"), record.get("kind"), record.get("category")
    if not isinstance(text, str) or not text.strip():
        raise InputError("needs a non-empty string", file=str(path), row=row, column="text")
    if kind not in KINDS:
        raise InputError(f"must be one of {', '.join(KINDS)}, got {kind!r}",
                         file=str(path), row=row, column="kind")
    if category not in CATEGORY:
        raise InputError(f"must be one of {', '.join(sorted(CATEGORY))}, got {category!r}",
                         file=str(path), row=row, column="category")
    return text, kind, category
