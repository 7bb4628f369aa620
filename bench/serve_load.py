"""Load bench for `POST /v1/events`: p50/p99 latency and throughput on loopback.

Starts `distillguard serve` on 127.0.0.1 (a fresh state database in a temporary folder,
a random token), then sends batches of --batch events at --rate requests per second
(open loop: request i is due at i / rate, so a slow server shows up as queueing delay,
not as a lower offered rate) for at most --seconds or --requests, whichever ends first,
and stops the server. Nothing leaves the machine.

    .venv/bin/python bench/serve_load.py --rate 200 --batch 100 --seconds 20

Latency "service" runs from sending to the answer; "scheduled" from when the request was
due (includes waiting for a free client slot when the server falls behind). The output
also gives the CPU time per answered request of the server process and of this client
(Linux), how long the server's threads were ready to run but waited for a core (Linux
schedstat), and the load average before and after: on a small shared machine the client
and other jobs compete with the server for the same cores, so read latencies with them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
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


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _runqueue_seconds(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread, and all its threads together, spent runnable but
    waiting for a core (Linux schedstat; NaN elsewhere): on a shared machine, the part
    of the latency that is the cores, not the server's code."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return float("nan"), float("nan")
    main = total = 0.0
    for tid in tids:
        try:
            wait = int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[1]) / 1e9
        except (OSError, IndexError, ValueError):
            continue
        total += wait
        if tid == str(pid):
            main = wait
    return main, total


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


async def _post(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
                ) -> int:
    """One request on a keep-alive HTTP/1.1 connection; the answer's status code."""
    reader, writer = conn
    writer.write(request)
    code = int((await reader.readline()).split()[1])
    length, chunked = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
    if not chunked:
        await reader.readexactly(length)
        return code
    while size := int((await reader.readline()).split(b";")[0], 16):
        await reader.readexactly(size + 2)
    await reader.readline()
    return code


async def _load(args: argparse.Namespace, port: int, token: str, bodies: list[bytes]
                ) -> tuple[int, float, list[float], list[float], list[int], int]:
    """Send the bodies open loop over --clients connections: requests sent, seconds,
    service and scheduled latencies and status codes of the answers in time, and how
    many times a connection had to be opened again.

    A lean asyncio client on purpose: it shares the machine with the server, and httpx
    from a thread pool took ~2.5 ms of CPU a request, half a core at 200 req/s."""
    head = (f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Content-Length: {}\r\n\r\n")
    requests = [head.format(len(b)).encode() + b for b in bodies]
    conns: asyncio.Queue = asyncio.Queue()
    for _ in range(args.clients):
        conns.put_nowait(await asyncio.open_connection("127.0.0.1", port))
    service: list[float] = []
    scheduled: list[float] = []
    codes: list[int] = []
    conn_errors = 0

    async def send(i: int, due: float) -> None:
        nonlocal conn_errors
        conn = await conns.get()  # waiting for a free connection counts as "scheduled"
        start = time.perf_counter()
        code = 0
        for _ in range(2):  # once more on a new connection: the server closes idle ones
            try:
                code = await _post(conn, requests[i])
                break
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                conn_errors += 1
                conn[1].close()
                conn = await asyncio.open_connection("127.0.0.1", port)
        done = time.perf_counter()
        service.append(done - start)
        scheduled.append(done - due)
        codes.append(code)
        conns.put_nowait(conn)

    t0 = time.perf_counter()
    tasks = []
    for i in range(len(requests)):
        due = t0 + i / args.rate
        if due > t0 + args.seconds:
            break
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(send(i, due)))
    # Bounded: requests still queued after a grace period are dropped, not sent.
    await asyncio.wait(tasks, timeout=args.grace)
    elapsed = time.perf_counter() - t0
    # Answers arriving from here on are not counted.
    result = (len(tasks), elapsed, list(service), list(scheduled), list(codes), conn_errors)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    while not conns.empty():
        conns.get_nowait()[1].close()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second offered")
    ap.add_argument("--batch", type=int, default=100, help="events per request")
    ap.add_argument("--seconds", type=float, default=20.0, help="longest sending time")
    ap.add_argument("--requests", type=int, default=4000, help="most requests sent")
    ap.add_argument("--accounts", type=int, default=2000, help="distinct accounts")
    ap.add_argument("--clients", type=int, default=32,
                    help="concurrent client slots (keep-alive connections)")
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
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="distillguard-bench-") as tmp:
        proc = _start(Path(tmp) / "state.duckdb", token, port, args.config)
        try:
            cpu0, client_cpu0 = _cpu_seconds(proc.pid), _cpu_seconds(os.getpid())
            wait0 = _runqueue_seconds(proc.pid)
            sent, elapsed, lat, lat_sched, answered, reconnects = asyncio.run(
                _load(args, port, token, bodies))
            cpu = _cpu_seconds(proc.pid) - cpu0
            client_cpu = _cpu_seconds(os.getpid()) - client_cpu0
            # Threads that ended during the load (none in the server) are not counted.
            wait = [b - a for a, b in zip(wait0, _runqueue_seconds(proc.pid), strict=True)]
            # How much linking ran beside the requests (it competes for the same cores).
            meta = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=60, headers={
                "Authorization": f"Bearer {token}"}).json()["meta"]
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    ok = sum(c == 200 for c in answered)
    ms = lambda xs, q: float(np.quantile(xs, q) * 1000) if xs else float("nan")  # noqa: E731
    print(json.dumps({
        "offered_rate": args.rate, "batch": args.batch, "requests_sent": sent,
        "answered_ok": ok, "errors": len(answered) - ok, "reconnects": reconnects,
        "not_answered_in_time": sent - len(answered), "seconds": round(elapsed, 1),
        "throughput_req_s": round(ok / elapsed, 1),
        "throughput_events_s": round(ok * args.batch / elapsed),
        "service_p50_ms": round(ms(lat, 0.5), 1), "service_p99_ms": round(ms(lat, 0.99), 1),
        "scheduled_p50_ms": round(ms(lat_sched, 0.5), 1),
        "scheduled_p99_ms": round(ms(lat_sched, 0.99), 1),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(len(answered), 1), 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / max(len(answered), 1), 2),
        # Share of the load's wall time the server's event-loop thread was ready to run
        # but had no core, and the same summed over all its threads (Linux).
        "server_main_thread_waiting_for_cpu": round(wait[0] / elapsed, 3),
        "server_threads_waiting_for_cpu_s": round(wait[1], 2),
        "linking_runs": int(meta.get("n_links", 0)),
        "last_linking_seconds": float(meta.get("last_link_seconds", "nan")),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()]}, indent=2))


if __name__ == "__main__":
    main()
