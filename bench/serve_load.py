"""Load bench for `POST /v1/events`: p50/p99 latency and throughput on loopback.

Starts `distillguard serve` on 127.0.0.1 (a fresh state database in a temporary folder,
a random token), then sends batches of --batch events at --rate requests per second
(open loop: request i is due at i / rate, so a slow server shows up as queueing delay,
not as a lower offered rate) for at most --seconds or --requests, whichever ends first,
and stops the server. Nothing leaves the machine.

    .venv/bin/python bench/serve_load.py --rate 200 --batch 100 --seconds 20

Latency "service" runs from sending to the answer; "scheduled" from when the request was
due (includes waiting for a free client slot when the server falls behind).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

START = datetime(2026, 3, 2, tzinfo=UTC)
WORDS = ("explain", "prove", "write", "function", "sort", "graph", "reward", "step", "model",
         "python", "integral", "summary", "agent", "tool", "review", "answer")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _batch(i: int, size: int, accounts: int, rng: np.random.Generator) -> list[dict]:
    """Contract events; event time advances one second per event (a busy gateway)."""
    out = []
    for j in range(size):
        n = i * size + j
        acct = int(rng.integers(accounts))
        out.append({
            "exchange_id": f"bench-{n}", "ts": (START + timedelta(seconds=n)).isoformat(),
            "account_id": f"acct-{acct}", "prompt": " ".join(rng.choice(WORDS, 12)),
            "model": "atlas-3", "ip": f"198.51.{acct % 250}.{acct // 250 % 250 + 1}",
            "asn": 64500 + acct % 50, "input_tokens": int(rng.integers(50, 900)),
            "output_tokens": int(rng.integers(50, 2000)), "status": "ok"})
    return out


def _start(db: Path, token: str, port: int, config: Path | None) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("distillguard")
    cmd = [str(exe), "serve", "--db", str(db), "--port", str(port)]
    if config:
        cmd += ["--config", str(config)]
    proc = subprocess.Popen(cmd, env={**os.environ, "DISTILLGUARD_TOKEN": token},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second offered")
    ap.add_argument("--batch", type=int, default=100, help="events per request")
    ap.add_argument("--seconds", type=float, default=20.0, help="longest sending time")
    ap.add_argument("--requests", type=int, default=4000, help="most requests sent")
    ap.add_argument("--accounts", type=int, default=2000, help="distinct accounts")
    ap.add_argument("--clients", type=int, default=32, help="concurrent client slots")
    ap.add_argument("--grace", type=float, default=10.0,
                    help="seconds to wait for answers after the last request is due")
    ap.add_argument("--config", type=Path, default=None, help="service configuration TOML")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    total = min(args.requests, int(args.rate * args.seconds))
    bodies = [json.dumps(_batch(i, args.batch, args.accounts, rng)).encode() for i in
              range(total)]
    token = secrets.token_urlsafe(24)
    port = _port()
    with tempfile.TemporaryDirectory(prefix="distillguard-bench-") as tmp:
        proc = _start(Path(tmp) / "state.duckdb", token, port, args.config)
        url = f"http://127.0.0.1:{port}/v1/events"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        service, scheduled, codes = [], [], []
        limits = httpx.Limits(max_connections=args.clients)
        client = httpx.Client(limits=limits, timeout=30)
        pool = ThreadPoolExecutor(args.clients)
        try:
            t0 = time.perf_counter()
            deadline = t0 + args.seconds

            def send(i: int, due: float) -> None:
                sent = time.perf_counter()
                try:
                    code = client.post(url, content=bodies[i], headers=headers).status_code
                except httpx.HTTPError:
                    code = 0
                done = time.perf_counter()
                service.append(done - sent)
                scheduled.append(done - due)
                codes.append(code)

            futures = []
            for i in range(total):
                due = t0 + i / args.rate
                if due > deadline:
                    break
                time.sleep(max(0.0, due - time.perf_counter()))
                futures.append(pool.submit(send, i, due))
            # Bounded: requests still queued after a grace period are dropped, not sent.
            wait(futures, timeout=args.grace)
            elapsed = time.perf_counter() - t0
            # Answers arriving from here on are not counted.
            lat, lat_sched, answered = list(service), list(scheduled), list(codes)
            pool.shutdown(wait=False, cancel_futures=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            pool.shutdown(wait=True, cancel_futures=True)
            client.close()
    ok = sum(c == 200 for c in answered)
    ms = lambda xs, q: float(np.quantile(xs, q) * 1000) if xs else float("nan")  # noqa: E731
    print(json.dumps({
        "offered_rate": args.rate, "batch": args.batch, "requests_sent": len(futures),
        "answered_ok": ok, "errors": len(answered) - ok,
        "not_answered_in_time": len(futures) - len(answered), "seconds": round(elapsed, 1),
        "throughput_req_s": round(ok / elapsed, 1),
        "throughput_events_s": round(ok * args.batch / elapsed),
        "service_p50_ms": round(ms(lat, 0.5), 1), "service_p99_ms": round(ms(lat, 0.99), 1),
        "scheduled_p50_ms": round(ms(lat_sched, 0.5), 1),
        "scheduled_p99_ms": round(ms(lat_sched, 0.99), 1)}, indent=2))


if __name__ == "__main__":
    main()
