"""Print the README's quality table from `distillguard eval --json` files (run by hand).

Usage: python bench/eval_table.py NAME=eval.json [NAME=eval.json ...]
"""

from __future__ import annotations

import json
import sys

NAMES = {"detector": "**detector**", "volume_p99": "volume p99", "iforest": "IsolationForest"}


def rows(label: str, path: str) -> list[str]:
    with open(path, encoding="utf-8") as fh:
        result = json.load(fh)
    out = []
    for name, s in result["systems"].items():
        fpr, pop = max(((v["fpr"] or 0.0), k) for k, v in s["fpr_by_population"].items())
        ari = "–" if s["ari"] is None else f"{s['ari']:.3f}"
        out.append(f"| {label} | {NAMES.get(name, name)} | {s['flagged']} | {s['precision']:.3f} "
                   f"| {s['recall']:.3f} | {s['f1']:.3f} | {ari} | {fpr:.2%} ({pop}) |")
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
