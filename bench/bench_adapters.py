"""Throughput of the log-format adapters (hand-run; numbers go to docs/adapters.md).

Builds N records per format by repeating the test fixtures with fresh ids, then times
`to_contract_parquet` (parse + map + write Parquet). Usage:

    .venv/bin/python bench/bench_adapters.py --rows 100000 --batch-rows 10000 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from distillguard.ingest.adapters import AdapterOptions, to_contract_parquet

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "adapters"


def _repeat_jsonl(src: Path, dst: Path, n: int, id_key: str) -> None:
    records = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    with dst.open("w") as fh:
        for i in range(n):
            rec = dict(records[i % len(records)])
            rec[id_key] = f"bench-{i}"
            fh.write(json.dumps(rec) + "\n")


def _repeat_otel(dst: Path, n: int) -> None:
    """One export request per line, each holding one copy of the fixture's first resource."""
    doc = json.loads((DATA / "otel_genai.jsonl").read_text().splitlines()[0])
    resource = doc["resourceSpans"][0]
    chat = resource["scopeSpans"][0]["spans"][0]
    with dst.open("w") as fh:
        for i in range(n):
            span = {**chat, "spanId": f"{i:016x}"}
            line = {"resourceSpans": [{**resource, "scopeSpans": [
                {**resource["scopeSpans"][0], "spans": [span]}]}]}
            fh.write(json.dumps(line) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--batch-rows", type=int, default=AdapterOptions().batch_rows)
    args = parser.parse_args()
    n = args.rows
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cases = {
            "openai-jsonl": (root / "openai.jsonl", AdapterOptions()),
            "anthropic-jsonl": (root / "anthropic.jsonl", AdapterOptions()),
            "litellm": (root / "litellm.jsonl", AdapterOptions()),
            "otel": (root / "otel.jsonl", AdapterOptions(account_attribute="tenant.id")),
        }
        _repeat_jsonl(DATA / "openai_requests.jsonl", cases["openai-jsonl"][0], n, "id")
        _repeat_jsonl(DATA / "anthropic_requests.jsonl", cases["anthropic-jsonl"][0], n, "id")
        _repeat_jsonl(DATA / "litellm_spendlogs.jsonl", cases["litellm"][0], n, "request_id")
        _repeat_otel(cases["otel"][0], n)
        for fmt, (path, options) in cases.items():
            for workers in args.workers:
                opts = replace(options, workers=workers, batch_rows=args.batch_rows)
                start, cpu = time.perf_counter(), time.process_time()
                rows = to_contract_parquet(fmt, [path], opts, root / f"{fmt}.parquet").rows
                secs, cpu = time.perf_counter() - start, time.process_time() - cpu
                mb = path.stat().st_size / 1e6
                # CPU time of this process only (with workers>1 the work is in the workers).
                print(f"{fmt:16s} workers={workers} {rows:>9,} rows  {mb:7.1f} MB  "
                      f"wall {secs:6.2f} s  {rows / secs:>9,.0f} rows/s  "
                      f"parent cpu {cpu:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
