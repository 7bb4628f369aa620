"""Helpers for the service tests: a free port, a real `distillguard serve` process, and a
state database seeded with the report fixtures' run (campaigns and charts, no detector)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from distillguard.serve.state import State
from fixtures_run import build_run_dir

TOKEN = "test-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`distillguard serve` in a child process on 127.0.0.1 (killed with SIGKILL on stop)."""

    def __init__(self, db: Path, token: str = TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).with_name("distillguard")
        env = {**os.environ, "DISTILLGUARD_TOKEN": token}
        self.proc = subprocess.Popen([str(exe), "serve", "--db", str(db), "--port",
                                      str(self.port)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stdout.read().decode() if self.proc.stdout else "")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("distillguard serve did not start within 60 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


def seeded_state(tmp: Path) -> tuple[Path, str]:
    """A state database whose latest linking result is the report fixtures' run."""
    run = build_run_dir(tmp / "fixture-run")
    db = tmp / "state.duckdb"
    state = State(db)
    shutil.copytree(run, state.run_dir)
    campaigns = json.loads((run / "campaigns.json").read_text())
    with state.transaction() as con:
        for c in campaigns:
            con.execute("INSERT INTO link_campaigns VALUES (?, ?, ?, ?, ?, ?, now(), ?, true)",
                        [c["campaign_id"], c["score"], c["n_accounts"], c["n_exchanges"],
                         c["first_seen"], c["last_seen"], json.dumps(c)])
    state.close()
    return db, campaigns[0]["campaign_id"]
