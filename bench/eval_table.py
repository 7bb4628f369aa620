"""Print the README's quality table from `distillguard eval --json` files (run by hand).

Usage: python bench/eval_table.py NAME=eval.json [NAME=eval.json ...]
"""

from __future__ import annotations

import json
import sys

NAMES = {"detector": "**detector**", "volume_p99": "volume p99", "iforest": "IsolationForest"}


def _num(v: float | None) -> str:
    """A metric to three decimals; undefined (nothing flagged) as a dash."""
    return "–" if v is None else f"{v:.3f}"


def rows(label: str, path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        result = json.load(fh)
    out = []
    for name, s in result["systems"].items():
        fpr, pop = max(((v["fpr"] or 0.0), k) for k, v in s["fpr_by_population"].items())
        p, r, f1, ari = (_num(s[k]) for k in ("precision", "recall", "f1", "ari"))
        out.append(f"| {label} | {NAMES.get(name, name)} | {s['flagged']} | {p} | {r} | {f1} "
                   f"| {ari} | {fpr:.2%} ({pop}) |")
    return out


def main(args: list[str]) -> None:
    print("| scenario, seed | system | flagged | precision | recall | F1 | ARI "
          "| worst benign FPR |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for arg in args:
        label, path = arg.split("=", 1)
        print("\n".join(rows(label, path)))


if __name__ == "__main__":
    main(sys.argv[1:])
