"""Simulator throughput and memory: generate a scenario, report wall time, CPU time, peak RSS.

Run by hand (not part of the tests); the figures go to docs/simulator.md:

    .venv/bin/python bench/simulate.py --scenario alibaba-scale --scale 1 --out /tmp/dg-ali

Peak RSS is the process's high-water mark (`ru_maxrss`), the same figure
`/usr/bin/time -v` prints as "Maximum resident set size".
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from distillguard.simulate import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="small")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    wall = time.perf_counter()
    summary = generate(args.scenario, args.seed, args.scale, args.out,
                       progress=lambda d, n: print(f"day {d}/{n}", flush=True))
    wall = time.perf_counter() - wall
    usage = resource.getrusage(resource.RUSAGE_SELF)
    size = sum(p.stat().st_size for p in args.out.rglob("*.parquet"))
    print(f"scenario {args.scenario} scale {args.scale:g}: {summary['accounts']:,} accounts, "
          f"{summary['exchanges']:,} exchanges ({summary['attacking_exchanges']:,} attacking "
          f"from {summary['attacking_accounts']:,} accounts) in {summary['parts']} parts, "
          f"{size / 2**20:,.0f} MiB")
    print(f"wall {wall:.1f} s, CPU {usage.ru_utime + usage.ru_stime:.1f} s, "
          f"{summary['exchanges'] / wall:,.0f} rows/s wall, "
          f"peak RSS {usage.ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
