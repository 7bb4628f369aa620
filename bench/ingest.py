"""Ingest throughput: generate a contract-shaped Parquet file, validate it, time it.

Run by hand (not part of the tests); the figures go to docs/ingest.md:

    .venv/bin/python bench/ingest.py --rows 2000000 --data /tmp/dg-bench-2m.parquet

It writes one Parquet file with every exchanges column (a small share of rows bad on
purpose, so the quarantine path is exercised), then times `load_inputs` plus reading
every accepted row through the typed view, which is what a detection run pays.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from distillguard.engine.duckdb_engine import connect
from distillguard.ingest import load_inputs, write_quarantine

T = TypeVar("T")
BAD_SHARE = 0.001  # rows with an unparseable ts, a bad IP or a duplicate id, each


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pa.Array:
    """A dictionary-free string column drawn from a small vocabulary, vectorised."""
    return pa.array(np.asarray(values, dtype=object)[rng.integers(0, len(values), n)],
                    pa.string())


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """Write `rows` exchanges (string timestamps, string IPs, JSON tool lists) to `path`."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("ex-", np.arange(rows).astype(str)).astype(object)
    start = np.datetime64("2026-03-01T00:00:00", "ms")
    ts = start + rng.integers(0, 30 * 86_400_000, rows).astype("timedelta64[ms]")
    ts_text = np.datetime_as_string(ts, unit="ms").astype(object) + "Z"
    octets = rng.integers(1, 255, (rows, 4)).astype(str)
    ips = np.char.add(np.char.add(np.char.add(octets[:, 0], "."), np.char.add(octets[:, 1], ".")),
                      np.char.add(np.char.add(octets[:, 2], "."), octets[:, 3])).astype(object)
    n_bad = int(rows * BAD_SHARE)
    bad = rng.choice(rows, 3 * n_bad, replace=False)
    ts_text[bad[:n_bad]] = "not a time"
    ips[bad[n_bad:2 * n_bad]] = "999.1.2.3"
    ids[bad[2 * n_bad:]] = ids[(bad[2 * n_bad:] + 1) % rows]
    accounts = np.char.add("acct-", rng.integers(0, rows // 50 + 1, rows).astype(str))
    words = ["write", "a", "python", "function", "that", "sorts", "explain", "the", "proof",
             "of", "step", "by", "grade", "this", "answer", "summarise", "article", "about"]
    prompt_len = rng.integers(5, 60, rows)
    vocab = np.asarray(words, dtype=object)
    prompts = [" ".join(vocab[rng.integers(0, len(words), k)]) for k in prompt_len[:5000]]
    table = pa.table({
        "exchange_id": pa.array(ids, pa.string()),
        "ts": pa.array(ts_text, pa.string()),
        "account_id": pa.array(accounts.astype(object), pa.string()),
        "prompt": pa.array(np.asarray(prompts, dtype=object)[np.arange(rows) % len(prompts)],
                           pa.string()),
        "org_id": _pick(rng, [f"org-{i}" for i in range(500)], rows),
        "api_key_id": _pick(rng, [f"key-{i}" for i in range(5000)], rows),
        "model": _pick(rng, ["atlas-3", "atlas-3-mini", "atlas-4"], rows),
        "ip": pa.array(ips, pa.string()),
        "asn": pa.array(rng.integers(1000, 70000, rows), pa.int64()),
        "country": _pick(rng, ["US", "DE", "SG", "BR", "IN", "FR"], rows),
        "user_agent": _pick(rng, ["openai-python/1.40", "anthropic-sdk/0.30", "curl/8.5"], rows),
        "system_prompt": _pick(rng, ["", "You are a helpful assistant."], rows),
        "n_messages": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "tool_names": _pick(rng, ["[]", '["search"]', '["search", "python"]'], rows),
        "has_image": pa.array(rng.random(rows) < 0.05),
        "thinking": pa.array(rng.random(rows) < 0.2),
        "input_tokens": pa.array(rng.integers(10, 4000, rows), pa.int64()),
        "output_tokens": pa.array(rng.integers(10, 2000, rows), pa.int64()),
        "response": _pick(rng, ["Sure, here it is.", "The answer is 42."], rows),
        "status": _pick(rng, ["ok", "ok", "ok", "error", "rate_limited"], rows),
    })
    pq.write_table(table, path, row_group_size=500_000)


def _timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """Result, wall seconds and CPU seconds (all threads) of `fn`: on a shared machine
    the CPU time is the steadier figure."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data", type=Path, default=None,
                        help="Parquet file to reuse (written first if it does not exist).")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.data or Path(tmp) / "exchanges.parquet"
        if not path.exists():
            _, t_gen, _ = _timed(lambda: generate(path, args.rows))
            print(f"generated {args.rows:,} rows in {t_gen:.1f} s")
        con = connect(threads=args.threads)
        report, t_load, c_load = _timed(lambda: load_inputs(con, exchanges=[path]))
        (n_view, *_), t_read, c_read = _timed(lambda: con.execute(
            "SELECT count(*), count(DISTINCT account_id), max(ts), sum(len(tool_names)), "
            "max(ip) FROM exchanges").fetchall()[0])
        _, t_q, c_q = _timed(lambda: write_quarantine(con, Path(tmp) / "quarantine.parquet"))
        rep = report.tables["exchanges"]
        assert rep.rows_read == rep.rows_accepted + rep.rows_quarantined
        assert n_view == rep.rows_accepted
        threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
        wall, cpu = t_load + t_read + t_q, c_load + c_read + c_q
        print(f"input: {path.stat().st_size / 1e6:.0f} MB Parquet, DuckDB threads={threads}")
        print(f"rows read {rep.rows_read:,} = accepted {rep.rows_accepted:,} + quarantined "
              f"{rep.rows_quarantined:,}")
        print(f"load_inputs (checks, quarantine, duplicates): {t_load:.1f} s wall, "
              f"{c_load:.1f} s CPU")
        print(f"one full read of the typed view:              {t_read:.1f} s wall, "
              f"{c_read:.1f} s CPU")
        print(f"total {wall:.1f} s wall = {rep.rows_read / wall:,.0f} rows/s; "
              f"{cpu:.1f} s CPU = {rep.rows_read / cpu:,.0f} rows per CPU-second")


if __name__ == "__main__":
    main()
