"""Load and fault benchmark of `hashmatch serve` (issue 18). Loopback only, bounded in time.

    .venv/bin/python benchmarks/bench_serve.py                 # 1M hashes, 2 workers, PostgreSQL
    .venv/bin/python benchmarks/bench_serve.py --size 100000 --seconds 10   # quick

Phases (each bounded by --seconds):
1. build: a durable PostgreSQL server (tests/pg_server.py) with --size random PDQ hashes
   stored through Index.add_hashes in batches; `hashmatch serve --workers 2` over it.
2. raw lookups: GET /m/raw_lookup (HMA) at full speed from a separate load generator (wrk if
   installed, else an asyncio httpx process): half stored hashes (1-31 bits off), half
   random. Throughput, p50 / p99.
3. image lookups: POST /m/lookup (HMA: exact PDQ of the upload) and POST /v1/query (the
   robust query) of a real photo; throughput and p50 / p99, next to the in-process cost of
   hashing that photo (so "bounded by hashing" is a measured ratio).
4. add -> matchable: a write through the service, then fresh-connection probes until every
   worker matches it.
5. faults: a writer adds 1,000 hashes/s (batches of 100 every 100 ms) while a prober looks
   up; one worker is SIGKILLed, later PostgreSQL is stopped and started again. Every write
   answered 2xx must be found afterwards; lookups and writes during the outage must fail
   only as 503 (or as connection resets of the killed worker's own connections); recovery
   time = store back -> first accepted write.
Results: JSON on stdout and in benchmarks/_work/serve_results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
WORK = REPO / "benchmarks" / "_work"
PHOTO_DIR = REPO.parent / "shared" / "data" / "public-corpus" / "photos"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_codes(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32), dtype=np.uint8)


def flip(code: np.ndarray, bits: int, rng) -> np.ndarray:
    out = np.unpackbits(code.copy())
    idx = rng.choice(256, size=bits, replace=False)
    out[idx] ^= 1
    return np.packbits(out)


def hexes(codes: np.ndarray) -> list[str]:
    return [bytes(row).hex() for row in codes]


# -- the server --------------------------------------------------------------------------------
class Server:
    def __init__(self, db: str, workers: int, log_path: Path):
        self.db, self.workers, self.log_path = db, workers, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 300) -> None:
        import httpx

        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hashmatch", "serve", "--db", self.db, "--port",
             str(self.port), "--workers", str(self.workers), "--sync-interval", "0.2"],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        ready: set[str] = set()
        while len(ready) < self.workers:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start:\n{self.log_path.read_text()[-3000:]}")
            try:
                r = httpx.get(self.url + "/readyz", headers={"Connection": "close"}, timeout=5)
                if r.status_code == 200:
                    ready.add(r.headers["x-hashmatch-worker"])
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    def worker_pids(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                    cmd = open(f"/proc/{entry}/cmdline", "rb").read()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and b"multiprocessing" in cmd \
                        and b"resource_tracker" not in cmd:
                    pids.append(int(entry))
        return pids

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()


# -- load generators ------------------------------------------------------------------------
WRK_RAW = """
local hashes = {}
for line in io.lines("%(hashes)s") do hashes[#hashes + 1] = line end
wrk.headers["Authorization"] = "Bearer %(token)s"
request = function()
  return wrk.format("GET", "/m/raw_lookup?signal_type=pdq&signal=" .. hashes[math.random(#hashes)])
end
"""
WRK_POST = """
local f = io.open("%(body)s", "rb"); local body = f:read("*all"); f:close()
wrk.method = "POST"; wrk.body = body
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Content-Type"] = "multipart/form-data; boundary=hmbench"
request = function() return wrk.format(nil, "%(path)s") end
"""


def run_wrk(url: str, script: str, seconds: float, connections: int, threads: int = 1) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                              f"{int(seconds)}s", "--latency", "-s", f.name, url],
                             capture_output=True, text=True, timeout=seconds + 60).stdout
    finally:
        os.unlink(f.name)
    return parse_wrk(out)


def parse_wrk(text: str) -> dict:
    def ms(value: str) -> float:
        units = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
        for unit in ("us", "ms", "s", "m"):
            if value.endswith(unit):
                return float(value[: -len(unit)]) * units[unit]
        return float(value)

    result = {"raw": text}
    for line in text.splitlines():
        parts = line.split()
        if line.strip().startswith(("50%", "99%")):
            result["p" + parts[0].rstrip("%")] = ms(parts[1])
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif "requests in" in line:
            result["requests"] = int(parts[0])
        elif line.strip().startswith("Non-2xx"):
            result["non_2xx"] = int(parts[-1])
        elif line.strip().startswith("Socket errors"):
            result["socket_errors"] = line.strip()
    result.setdefault("non_2xx", 0)
    return result


def run_python_load(url: str, paths: list[str], token: str, seconds: float, connections: int,
                    body: bytes | None = None) -> dict:
    """Fallback load generator (wrk not installed): an asyncio httpx client in this process's
    child, so its CPU is its own."""
    code = f"""
import asyncio, json, random, sys, time, httpx
paths = {paths!r}; body = {body!r}; end = time.monotonic() + {seconds}
lat = []; bad = 0
async def one(c):
    global bad
    while time.monotonic() < end:
        t = time.perf_counter()
        if body is None:
            r = await c.get(random.choice(paths))
        else:
            r = await c.post(paths[0], content=body,
                             headers={{"content-type": "multipart/form-data; boundary=hmbench"}})
        lat.append(time.perf_counter() - t); bad += r.status_code != 200
async def main():
    limits = httpx.Limits(max_connections={connections})
    async with httpx.AsyncClient(base_url={url!r}, limits=limits, timeout=30,
                                 headers={{"Authorization": "Bearer {token}"}}) as c:
        await asyncio.gather(*[one(c) for _ in range({connections})])
asyncio.run(main())
lat.sort()
print(json.dumps({{"rps": len(lat) / {seconds}, "requests": len(lat), "non_2xx": bad,
                  "p50": lat[len(lat) // 2] * 1000, "p99": lat[int(len(lat) * 0.99)] * 1000}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=seconds + 120)
    return json.loads(out.stdout)


def multipart(photo: bytes) -> bytes:
    return (b"--hmbench\r\nContent-Disposition: form-data; name=\"photo\"; filename=\"q.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + photo + b"\r\n--hmbench--\r\n")


# -- phases ----------------------------------------------------------------------------------
# The peer: a Flask app answering /m/raw_lookup as HMA's matcher does (python-threatexchange's
# PDQIndex over the same hashes, one index per gunicorn worker, radius 31), served by
# gunicorn as HMA's Dockerfile does (sync workers). Our own few lines, not HMA's code: it
# needs `pip install threatexchange flask gunicorn` in the interpreter given by --peer-python.
PEER_APP = """
import os
from flask import Flask, abort, request
from threatexchange.signal_type.pdq.pdq_index import PDQIndex

with open(os.environ["PEER_HASHES"]) as f:
    index = PDQIndex.build((line.strip(), k + 1) for k, line in enumerate(f) if line.strip())
app = Flask(__name__)

@app.get("/m/raw_lookup")
def raw_lookup():
    if request.args.get("signal_type") != "pdq":
        abort(400)
    return {"matches": [m.metadata for m in index.query(request.args.get("signal", ""))]}

@app.get("/status")
def status():
    return "I-AM-ALIVE"
"""


def run_peer(python: str, codes: np.ndarray, hash_file: Path, workers: int, seconds: float,
             connections: int) -> dict:
    import httpx

    stored = WORK / "peer_hashes.txt"
    stored.write_text("\n".join(hexes(codes)) + "\n")
    (WORK / "hma_peer_app.py").write_text(PEER_APP)
    port = free_port()
    env = {**os.environ, "PEER_HASHES": str(stored), "PYTHONPATH": str(WORK)}
    log_file = open(WORK / "peer.log", "wb")
    started = time.monotonic()
    proc = subprocess.Popen([python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                             "--workers", str(workers), "--timeout", "600", "hma_peer_app:app"],
                            env=env, stdout=log_file, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        while True:  # every worker builds its index before it can answer
            time.sleep(1)
            if proc.poll() is not None:
                raise SystemExit((WORK / "peer.log").read_text()[-2000:])
            try:
                for _ in range(8):
                    httpx.get(f"http://127.0.0.1:{port}/status", timeout=1,
                              headers={"Connection": "close"}).raise_for_status()
                break
            except httpx.HTTPError:
                continue
        start_s = time.monotonic() - started
        script = WRK_RAW % {"hashes": hash_file, "token": "none"}
        out = run_wrk(f"http://127.0.0.1:{port}", script, seconds, connections)
        out.pop("raw", None)
        out["start_s"] = start_s
        return out
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log_file.close()


def sequential_ms(url: str, path: str, body: bytes, token: str, n: int = 30) -> float:
    """Median latency of one request at a time (no queueing): next to the in-process
    hashing cost, it shows what the service adds to hashing."""
    import httpx

    timings = []
    with httpx.Client(base_url=url, timeout=60, headers={
            "Authorization": f"Bearer {token}",
            "content-type": "multipart/form-data; boundary=hmbench"}) as c:
        for _ in range(n):
            t = time.perf_counter()
            c.post(path, content=body).raise_for_status()
            timings.append(time.perf_counter() - t)
    return 1000 * float(np.median(timings))


def build_store(url: str, size: int, seed: int) -> np.ndarray:
    import hashmatch as hm

    codes = random_codes(size, seed)
    started = time.monotonic()
    import psycopg

    with hm.Index.open(url, create=True) as index, psycopg.connect(url, autocommit=True) as db:
        for start in range(0, size, 50_000):
            index.add_hashes(codes[start:start + 50_000], algorithm="pdq", source="bench")
            # Fresh planner statistics: without them, the sync after a batch (fingerprints
            # of 50k item ids) was planned as a scan of every row and took minutes past
            # ~500k rows (autovacuum's ANALYZE lags a bulk load).
            db.execute("ANALYZE hashmatch.items")
            db.execute("ANALYZE hashmatch.fingerprints")
            log(f"built {min(size, start + 50_000):,} hashes")
    log(f"store of {size:,} hashes built in {time.monotonic() - started:.1f} s")
    return codes


def lookup_hash_file(codes: np.ndarray, path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(2000):
        if k % 2 == 0:
            code = codes[rng.integers(len(codes))]
            lines.append(bytes(flip(code, int(rng.integers(1, 32)), rng)).hex())
        else:
            lines.append(bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex())
    path.write_text("\n".join(lines) + "\n")


def add_to_matchable(server: Server, curate: str, match: str, rounds: int) -> dict:
    import httpx

    rng = random.Random(5)
    latencies = []
    for _ in range(rounds):
        value = "".join(rng.choice("0123456789abcdef") for _ in range(64))
        r = httpx.post(server.url + "/v1/items/hashes", json={"hashes": [value]},
                       headers={"Authorization": f"Bearer {curate}"}, timeout=30)
        r.raise_for_status()
        item = r.json()["item_ids"][0]
        written = time.monotonic()
        seen, workers = set(), set()
        while not (len(workers) >= server.workers and seen >= workers):
            p = httpx.get(server.url + "/m/raw_lookup", params={"signal_type": "pdq",
                                                               "signal": value},
                          headers={"Authorization": f"Bearer {match}", "Connection": "close"})
            workers.add(p.headers["x-hashmatch-worker"])
            if item in p.json()["matches"]:
                seen.add(p.headers["x-hashmatch-worker"])
            if time.monotonic() - written > 30:
                raise SystemExit("a write did not become matchable on every worker in 30 s")
        latencies.append(time.monotonic() - written)
    latencies.sort()
    return {"n": rounds, "median_s": latencies[len(latencies) // 2],
            "p95_s": latencies[int(len(latencies) * 0.95)], "max_s": latencies[-1]}


class Writer(threading.Thread):
    """1,000 hashes/s: a batch of 100 every 100 ms; remembers what was acknowledged."""

    def __init__(self, url: str, token: str, seconds: float):
        super().__init__(daemon=True)
        self.url, self.token, self.seconds = url, token, seconds
        self.acked: list[str] = []
        self.statuses: dict[str, int] = {}
        self.events: list[tuple[float, str]] = []
        self.sent = 0

    def run(self) -> None:
        import httpx

        rng = np.random.default_rng(99)
        end = time.monotonic() + self.seconds
        next_at = time.monotonic()
        with httpx.Client(base_url=self.url, timeout=10,
                          headers={"Authorization": f"Bearer {self.token}"}) as c:
            while time.monotonic() < end:
                batch = hexes(rng.integers(0, 256, size=(100, 32), dtype=np.uint8))
                self.sent += len(batch)
                try:
                    r = c.post("/v1/items/hashes", json={"hashes": batch, "source": "writer"})
                    key = str(r.status_code)
                    if r.status_code == 201:
                        self.acked += batch
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                self.statuses[key] = self.statuses.get(key, 0) + 1
                self.events.append((time.monotonic(), key))
                next_at += 0.1
                time.sleep(max(0.0, next_at - time.monotonic()))


class Prober(threading.Thread):
    """Lookups at ~200/s during the fault run, each on a fresh connection; counts statuses."""

    def __init__(self, url: str, token: str, seconds: float, values: list[str]):
        super().__init__(daemon=True)
        self.url, self.token, self.seconds, self.values = url, token, seconds, values
        self.statuses: dict[str, int] = {}

    def run(self) -> None:
        import httpx

        end = time.monotonic() + self.seconds
        with httpx.Client(base_url=self.url, timeout=10,
                          headers={"Authorization": f"Bearer {self.token}"}) as c:
            while time.monotonic() < end:
                try:
                    r = c.get("/m/raw_lookup", params={"signal_type": "pdq",
                                                       "signal": random.choice(self.values)})
                    key = str(r.status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                self.statuses[key] = self.statuses.get(key, 0) + 1
                time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--skip", nargs="*", default=[], choices=["raw", "image", "latency",
                                                                  "faults"])
    parser.add_argument("--raw-connections", type=int, nargs="*", default=None,
                        help="run the raw-lookup phase once per connection count")
    parser.add_argument("--peer-python", default=None,
                        help="interpreter with threatexchange, flask and gunicorn installed: "
                             "also measure HMA's way (Flask + PDQIndex) on the same hashes")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    from pg_server import PgServer

    import hashmatch as hm
    from hashmatch.serve.settings import create_token
    from hashmatch.store import open_store

    results: dict = {"size": args.size, "workers": args.workers, "seconds": args.seconds,
                     "loadgen": "wrk" if shutil.which("wrk") else "python httpx (asyncio)",
                     "cpus": os.cpu_count(), "load_average_start": os.getloadavg()}
    pg = PgServer(durable=True).start()
    server = None
    try:
        url = pg.new_database("bench")
        codes = build_store(url, args.size, seed=1)
        store = open_store(url)
        curate, match = create_token(store, "bench-curate", "curate"), \
            create_token(store, "bench-match", "match")
        store.close()
        server = Server(url, args.workers, WORK / "serve_bench.log")
        started = time.monotonic()
        server.start()
        results["start_s"] = time.monotonic() - started
        log(f"{args.workers} workers ready in {results['start_s']:.1f} s")
        hash_file = WORK / "serve_hashes.txt"
        lookup_hash_file(codes, hash_file, seed=2)
        values = hash_file.read_text().split()
        if "raw" not in args.skip:
            for connections in args.raw_connections or [args.connections]:
                if shutil.which("wrk"):
                    raw = run_wrk(server.url, WRK_RAW % {"hashes": hash_file, "token": match},
                                  args.seconds, connections)
                else:
                    raw = run_python_load(server.url,
                                          [f"/m/raw_lookup?signal_type=pdq&signal={v}"
                                           for v in values[:500]], match, args.seconds,
                                          connections)
                raw.pop("raw", None)
                raw["connections"] = connections
                results.setdefault("raw_lookup_by_connections", []).append(raw)
                results["raw_lookup"] = raw
                log(f"raw lookups, {connections} connections: {raw}")
        if "image" not in args.skip:
            by_size = sorted(PHOTO_DIR.glob("*.jpg"), key=lambda p: (p.stat().st_size, p.name))
            photo_path = by_size[len(by_size) // 2]  # the corpus's median-size photo
            photo = photo_path.read_bytes()
            body_path = WORK / "serve_body.bin"
            body_path.write_bytes(multipart(photo))
            timings = []
            for _ in range(20):
                t = time.perf_counter()
                hm.hash_file(photo, exact=True)
                timings.append(time.perf_counter() - t)
            q_timings = []
            with hm.Index.open(url) as index:  # the robust query in-process, for the ratio
                for _ in range(10):
                    t = time.perf_counter()
                    index.query(photo)
                    q_timings.append(time.perf_counter() - t)
            results["image"] = {"photo_bytes": len(photo),
                                "hash_exact_ms_in_process": 1000 * float(np.median(timings)),
                                "query_ms_in_process": 1000 * float(np.median(q_timings))}
            for path in ("/m/lookup", "/v1/query"):
                body = body_path.read_bytes()
                if path == "/v1/query":
                    body = body.replace(b'name="photo"', b'name="file"')
                    (WORK / "serve_body_v1.bin").write_bytes(body)
                if shutil.which("wrk"):
                    out = run_wrk(server.url, WRK_POST % {
                        "body": WORK / ("serve_body.bin" if path == "/m/lookup"
                                        else "serve_body_v1.bin"),
                        "token": match, "path": path}, args.seconds, 4)
                else:
                    out = run_python_load(server.url, [path], match, args.seconds, 4, body)
                out.pop("raw", None)
                out["sequential_median_ms"] = sequential_ms(server.url, path, body, match)
                results["image"][path] = out
                log(f"image {path}: {out}")
        if "latency" not in args.skip:
            results["add_to_matchable"] = add_to_matchable(server, curate, match, 30)
            log(f"add -> matchable: {results['add_to_matchable']}")
        if args.peer_python:
            if server is not None:
                server.stop()  # the peer gets the machine to itself, as the service did
                server = None
            results["peer_flask_pdqindex"] = run_peer(args.peer_python, codes, hash_file,
                                                      args.workers, args.seconds,
                                                      args.connections)
            log(f"peer (Flask + PDQIndex, gunicorn): {results['peer_flask_pdqindex']}")
            server = Server(url, args.workers, WORK / "serve_bench.log")
            server.start()
        if "faults" not in args.skip:
            results["faults"] = fault_run(server, pg, curate, match, values, url)
            log(f"faults: {results['faults']}")
    finally:
        if server is not None:
            server.stop()
        pg.stop()
    results["load_average_end"] = os.getloadavg()
    (WORK / "serve_results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def fault_run(server: Server, pg, curate: str, match: str, values: list[str], url: str) -> dict:
    import httpx

    import hashmatch as hm

    seconds = 40.0
    writer = Writer(server.url, curate, seconds)
    prober = Prober(server.url, match, seconds, values)
    writer.start()
    prober.start()
    out: dict = {}
    time.sleep(8)
    victims = server.worker_pids()
    out["workers_before"] = len(victims)
    if victims:
        os.kill(victims[0], signal.SIGKILL)
        killed_at = time.monotonic()
        log(f"killed worker {victims[0]}")
        while True:  # until uvicorn has replaced it and the new worker is ready
            pids = server.worker_pids()
            if len(pids) >= server.workers and victims[0] not in pids:
                try:
                    ok = all(httpx.get(server.url + "/readyz", headers={"Connection": "close"},
                                       timeout=5).status_code == 200 for _ in range(6))
                except httpx.HTTPError:
                    ok = False
                if ok:
                    break
            if time.monotonic() - killed_at > 60:
                break
            time.sleep(0.05)
        out["worker_replaced_s"] = time.monotonic() - killed_at
        log(f"worker replaced in {out['worker_replaced_s']:.1f} s")
    time.sleep(max(0.0, 20 - (time.monotonic() - (writer.events[0][0] if writer.events else 0))))
    pg_ctl = os.path.join(pg.bindir, "pg_ctl")
    down_at = time.monotonic()
    pg._run([pg_ctl, "-D", pg.datadir, "-m", "immediate", "-w", "stop"], "pg_ctl stop")
    log("PostgreSQL stopped (immediate)")
    time.sleep(3)
    from pg_server import _quote  # the same options PgServer.start gave it

    options = ["-c", "listen_addresses=''", "-c", f"unix_socket_directories={pg.sockdir}",
               "-c", "max_connections=200", "-c", "shared_buffers=128MB"]
    pg._run([pg_ctl, "-D", pg.datadir, "-l", os.path.join(pg.root, "server.log"), "-w",
             "-t", "60", "-o", " ".join(_quote(o) for o in options), "start"], "pg_ctl start")
    up_at = time.monotonic()
    log("PostgreSQL started")
    out["store_down_s"] = up_at - down_at
    writer.join()
    prober.join()
    first_ok_after = next((t for t, key in writer.events if t > up_at and key == "201"), None)
    out["recovery_s"] = None if first_ok_after is None else first_ok_after - up_at
    out["writer_statuses"] = writer.statuses
    out["prober_statuses"] = prober.statuses
    out["writer_sent"] = writer.sent
    out["writer_acked"] = len(writer.acked)
    outage = [key for t, key in writer.events if down_at <= t <= up_at]
    out["writer_statuses_during_outage"] = {k: outage.count(k) for k in set(outage)}
    # Every acknowledged write must be in the store and matchable on the service.
    time.sleep(1.0)
    with hm.Index.open(url) as index:
        found = index.query_hashes(writer.acked, max_distance=0)
    missing_store = sum(1 for m in found if not m)
    missing_service = 0
    with httpx.Client(base_url=server.url, timeout=60,
                      headers={"Authorization": f"Bearer {match}"}) as c:
        for start in range(0, len(writer.acked), 2000):
            chunk = writer.acked[start:start + 2000]
            r = c.post("/v1/lookup/hashes", json={"hashes": chunk, "max_distance": 0})
            missing_service += sum(1 for res in r.json()["results"] if not res["matches"])
    out["acked_missing_in_store"] = missing_store
    out["acked_missing_on_service"] = missing_service
    statuses = set(writer.statuses) | set(prober.statuses)
    out["any_5xx_other_than_503"] = sorted(s for s in statuses
                                           if s.isdigit() and s.startswith("5") and s != "503")
    return out


if __name__ == "__main__":
    main()
