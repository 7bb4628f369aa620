"""Prompt grammars: templates composed from frames x tasks, filled from slot vocabularies.

Composition keeps the data small (a few dozen frames and tasks per category) while giving
hundreds of templates per capability category and millions of surface forms. Rendering is
done once per prompt *pool*; traffic rows then pick pool entries by index (vectorised), so
no per-row Python runs while tens of millions of exchanges are generated.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

_FIELD = re.compile(r"\{([a-z_]+?)(\d?)\}")
# Numeric slots: name -> (low, high) inclusive.
_NUMBERS = {"n1": (2, 12), "n2": (2, 60), "n3": (10, 400), "n4": (100, 99999)}
_ARTICLE = re.compile(r"(^|\s)([Aa]) $")
_VOWELS = frozenset("aeioAEIO")
_MARK = "\x00"  # marks where a task that starts a sentence begins
# A compiled template: literal strings, and (slot, key, article) for each field, where
# `article` is "a"/"A" when the literal before it ended in that article (a/an agreement).
Token = str | tuple[str, str, str]


@cache
def _task_starts_sentence(frame: str) -> bool:
    """True when {task} follows a full stop: the task's first letter is then capitalised."""
    return re.search(r"[.?!]\s+\{task\}", frame) is not None


@cache
def _compile(template: str) -> tuple[Token, ...]:
    tokens: list[Token] = []
    pos = 0
    for m in _FIELD.finditer(template):
        literal = template[pos:m.start()]
        art = _ARTICLE.search(literal)
        article = ""
        if art:
            article, literal = art.group(2), literal[:art.start(2)]
        if literal:
            tokens.append(literal)
        tokens.append((m.group(1), m.group(0), article))
        pos = m.end()
    if template[pos:]:
        tokens.append(template[pos:])
    return tuple(tokens)


@dataclass(frozen=True)
class Grammar:
    """The parsed grammar file: slot vocabularies and frame/task lists per style and category."""

    slots: dict[str, list[str]]
    styles: dict[str, Any]

    def frames(self, style: str, category: str | None = None) -> list[str]:
        node = self.styles[style] if category is None else self.styles[style][category]
        return list(node["frames"])

    def tasks(self, style: str, category: str | None = None) -> list[str]:
        """Tasks of a style; a distill category without its own tasks reuses the organic ones."""
        node = self.styles[style] if category is None else self.styles[style][category]
        if node["tasks"] or category is None:
            return list(node["tasks"])
        return list(self.styles["organic"][category]["tasks"])

    def template_count(self, style: str, category: str) -> int:
        return len(self.frames(style, category)) * len(self.tasks(style, category))

    def fill(self, template: str, rng: random.Random, depth: int = 0) -> str:
        """Fill every {slot}; a value may itself hold slots (filled up to two levels down)."""
        chosen: dict[str, str] = {}
        out: list[str] = []
        for tok in _compile(template):
            if isinstance(tok, str):
                out.append(tok)
                continue
            slot, key, article = tok
            value = chosen.get(key)
            if value is None:
                if key[1:-1] in _NUMBERS:
                    lo, hi = _NUMBERS[key[1:-1]]
                    value = str(lo + int(rng.random() * (hi - lo + 1)))
                else:
                    values = self.slots[slot]
                    value = values[int(rng.random() * len(values))]
                    if "{" in value and depth < 2:
                        value = self.fill(value, rng, depth + 1)
                chosen[key] = value
            if article:
                out.append(article + ("n " if value[:1] in _VOWELS else " "))
            out.append(value)
        return "".join(out)

    def render(self, frames: list[str], tasks: list[str], n: int, rng: random.Random,
               lead_ins: list[str] | None = None, tails: list[str] | None = None) -> list[str]:
        """Render n prompts: random frame x task, filled slots, optional lead-in and tail."""
        out = []
        nf, nt = len(frames), len(tasks)
        for _ in range(n):
            frame = frames[int(rng.random() * nf)]
            task = tasks[int(rng.random() * nt)]
            capital = _task_starts_sentence(frame)
            text = self.fill(frame.replace("{task}", _MARK + task if capital else task), rng)
            if capital:  # the task may start with a slot: capitalise after filling
                i = text.index(_MARK)
                text = text[:i] + text[i + 1:i + 2].upper() + text[i + 2:]
            text = text.replace("..", ".").replace("?.", "?")
            if lead_ins and frame.startswith("{task}"):
                text = lead_ins[int(rng.random() * len(lead_ins))] + text
            if tails:
                text = text + tails[int(rng.random() * len(tails))]
            out.append(text[:1].upper() + text[1:])
        return out


@cache
def load() -> Grammar:
    """The packaged grammar (cached: it is read-only)."""
    raw = json.loads(
        resources.files("distillguard.simulate").joinpath("grammar.json").read_text("utf-8")
    )
    slots = raw.pop("slots")
    raw.pop("_about", None)
    return Grammar(slots=slots, styles=raw)
