"""Detect at scale on DuckDB: throughput, peak RSS, ratio to a bare scan, per-stage profile.

Run by hand (not part of the tests); the figures go to docs/scale.md. Data comes from
the simulator, e.g. about 1.5M, 7.6M and 37.8M exchanges (28.8M attacking):

    .venv/bin/distillguard simulate --scenario alibaba-scale --seed 1 --scale 0.04 --out /tmp/ali004
    .venv/bin/python bench/detect_scale.py --data /tmp/ali004 --out /tmp/ali004-run

In one process it times a bare DuckDB scan of the same Parquet (`SELECT count(*),
sum(length(prompt))`, once cold and once warm: the floor no detector can beat), then
the whole detection (ingest, detect, outputs) with the time between the pipeline's
progress callbacks as the stage profile and each stage's own peak RSS, then prints one
Markdown row and appends a JSON line to --results. The machine is shared: the load
average before and after is recorded with the timings.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import duckdb

from distillguard import config
from distillguard.pipeline import run_detection


def bare_scan(exchanges: Path) -> float:
    """Seconds for the warm bare scan (a first, cold scan fills the page cache)."""
    glob = str(exchanges / "**" / "*.parquet").replace("'", "''")
    con = duckdb.connect()
    sql = f"SELECT count(*), sum(length(prompt)) FROM read_parquet('{glob}')"
    con.execute(sql).fetchall()
    t = time.perf_counter()
    con.execute(sql).fetchall()
    return time.perf_counter() - t


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _stage_peak_gib() -> float | None:
    """Peak RSS since the last call (Linux: VmHWM, then reset through clear_refs), so each
    stage's own peak is known, not only the whole run's."""
    try:
        with open("/proc/self/status") as fh:
            kib = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM"))
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except (OSError, StopIteration):
        return None
    return round(kib / 2**20, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="simulator output directory")
    ap.add_argument("--out", type=Path, required=True, help="run directory to write")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=Path("bench/detect_scale.jsonl"))
    args = ap.parse_args()
    cfg = config.load(args.config)
    load_before = os.getloadavg()
    scan_s = bare_scan(args.data / "exchanges")
    stages: list[tuple[str, float]] = []
    peaks: list[float | None] = []
    cpu0 = _cpu_s()
    t0 = time.perf_counter()

    def progress(name: str) -> None:
        peaks.append(_stage_peak_gib())
        stages.append((name, time.perf_counter() - t0))
        print(f"{stages[-1][1]:8.1f}s  {name}  (peak RSS of the stage before: "
              f"{peaks[-1]} GiB)", flush=True)

    result = run_detection([args.data / "exchanges"], args.out, cfg,
                           accounts=[args.data / "accounts.parquet"],
                           releases=[args.data / "releases.parquet"], progress=progress)
    wall = time.perf_counter() - t0
    peaks.append(_stage_peak_gib())
    ends = [t for _, t in stages[1:]] + [wall]
    profile = {name: round(end - start, 2) for (name, start), end in zip(stages, ends,
                                                                         strict=True)}
    n = result["ingest"].tables["exchanges"].rows_read
    row = {
        "data": str(args.data), "exchanges": n, "accounts": result["accounts"],
        "flagged": result["flagged"], "campaigns": len(result["campaigns"]),
        "detect_s": round(wall, 2),
        "exchanges_per_s": round(n / wall), "bare_scan_s": round(scan_s, 3),
        "ratio_to_scan": round(wall / scan_s, 1),
        # clear_refs also resets ru_maxrss: the run's peak is the highest stage peak.
        "peak_rss_gib": max([p for p in peaks if p is not None] or [round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)]),
        # CPU seconds of the process (both DuckDB threads): less sensitive than the wall
        # time to other jobs on a shared machine.
        "cpu_s": round(_cpu_s() - cpu0, 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()], "cpus": os.cpu_count(),
        "memory_limit": cfg["engine"]["memory_limit"], "stages_s": profile,
        "stage_peak_rss_gib": {name: peak for (name, _), peak in zip(stages, peaks[1:],
                                                                    strict=True)},
    }
    with args.results.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))
    print(f"| {n:,} | {wall:.1f} s | {n / wall:,.0f} | {row['peak_rss_gib']} GiB | "
          f"{scan_s:.2f} s | {wall / scan_s:.0f}x | {load_before[0]:.1f} / "
          f"{row['load_after'][0]:.1f} |")


if __name__ == "__main__":
    main()
