"""The real `hashmatch serve` in a subprocess, for the service tests (imported by the other
test_serve*.py modules), and the tests of its start-up and shutdown."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_token(db, name: str, role: str) -> str:
    result = run_cli("token", "create", name, "--role", role, "--db", db)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("hm_") and len(token) > 40
    return token


class ServeProcess:
    """`python -m hashmatch serve` on a free loopback port; FAILS the test (never skips) with
    the server's log if it does not become ready."""

    def __init__(self, db, workers: int = 1, log_path: Path | None = None, *extra):
        self.db = str(db)
        self.workers = workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path or f"/tmp/hashmatch-serve-{self.port}.log")
        self.extra = [str(x) for x in extra]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "ServeProcess":
        env = dict(os.environ)
        env.pop("HASHMATCH_DB", None)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hashmatch", "serve", "--db", self.db, "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--sync-interval", "0.2",
             *self.extra],
            stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        # Ready means every worker has loaded its index: one worker answering 200 while the
        # other still loads would hand the test a 503 on its first call. Fresh connections let
        # the kernel spread the probes over the workers; each answer names its worker.
        ready_workers: set[str] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"hashmatch serve exited with {self.proc.returncode}:\n{self.log()}",
                            pytrace=False)
            try:
                r = httpx.get(self.url + "/readyz", headers={"Connection": "close"}, timeout=2)
                if r.status_code == 200:
                    ready_workers.add(r.headers.get("x-hashmatch-worker", ""))
                    if len(ready_workers) >= self.workers:
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05 if ready_workers else 0.2)
        self.stop()
        pytest.fail(f"hashmatch serve did not become ready in {timeout:.0f} s:\n{self.log()}",
                    pytrace=False)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only our workers
                self.proc.wait(timeout=10)
        self._log.close()
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def test_serve_refuses_a_database_it_cannot_open(tmp_path):
    bad = tmp_path / "not-a-db.hmdb"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = run_cli("serve", "--db", bad, "--port", str(free_port()))
    assert result.returncode == 2
    assert "not a hashmatch database" in result.stderr or "not-a-db" in result.stderr


def test_token_commands(tmp_path):
    db = tmp_path / "t.hmdb"
    token = make_token(db, "alice", "curate")
    listed = run_cli("token", "list", "--db", db)
    assert listed.returncode == 0 and "alice\tcurate" in listed.stdout
    assert token not in listed.stdout  # never shown again
    again = run_cli("token", "create", "alice", "--role", "match", "--db", db)
    assert again.returncode == 2 and "exists already" in again.stderr
    assert run_cli("token", "revoke", "alice", "--db", db).returncode == 0
    assert "alice" not in run_cli("token", "list", "--db", db).stdout
    assert run_cli("token", "revoke", "alice", "--db", db).returncode == 2
    bad_role = run_cli("token", "create", "bob", "--role", "admin", "--db", db)
    assert bad_role.returncode == 2


def test_serve_starts_answers_and_stops_cleanly(tmp_path):
    db = tmp_path / "s.hmdb"
    token = make_token(db, "alice", "match")
    with ServeProcess(db, 1, tmp_path / "serve.log") as server:
        assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
        status = httpx.get(server.url + "/m/index/status",
                           headers={"Authorization": f"Bearer {token}"})
        assert status.status_code == 200 and status.json()["pdq"]["present"] is True
        proc = server.proc
    assert proc.returncode == 0, server.log()


def test_request_timeout_answers_503(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    db = tmp_path / "slow.hmdb"
    token = make_token(db, "m", "match")
    noise = np.random.default_rng(1).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format="JPEG", quality=80)  # ~12 Mpx, < 20 MB
    with ServeProcess(db, 1, tmp_path / "serve.log", "--request-timeout", "0.1") as server:
        r = httpx.post(server.url + "/v1/query", files={"file": ("big.png", buffer.getvalue())},
                       headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 503 and r.json() == {"message": "request timed out"}
        assert httpx.get(server.url + "/healthz").status_code == 200
