"""Several `hashmatch serve` workers over one store (an SQLite file; a real PostgreSQL
server): each keeps its own in-memory index, and a write made through one worker becomes
matchable on every worker within about a sync interval."""
from __future__ import annotations

import random
import time

import httpx

from test_serve_server import ServeProcess, make_token


def _hex(rng) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(64))


def converge(server, curate: str, match: str, rounds: int = 5) -> list[float]:
    """Add a hash through the service, then probe with fresh connections (so the kernel
    spreads them over the workers) until every worker has answered with the match; returns
    the add-to-matchable latencies (seconds) of each round."""
    rng = random.Random(11)
    latencies, workers_seen = [], set()
    for _ in range(rounds):
        value = _hex(rng)
        r = httpx.post(server.url + "/v1/items/hashes", json={"hashes": [value]},
                       headers={"Authorization": f"Bearer {curate}"}, timeout=30)
        assert r.status_code == 201, r.text
        item_id = r.json()["item_ids"][0]
        written = time.monotonic()
        seen_by: set[str] = set()
        all_workers: set[str] = set()
        deadline = written + 20
        while True:
            probe = httpx.get(server.url + "/m/raw_lookup",
                              params={"signal_type": "pdq", "signal": value},
                              headers={"Authorization": f"Bearer {match}",
                                       "Connection": "close"}, timeout=30)
            assert probe.status_code == 200, probe.text
            worker = probe.headers["x-hashmatch-worker"]
            all_workers.add(worker)
            if item_id in probe.json()["matches"]:
                seen_by.add(worker)
            if len(all_workers) >= server.workers and seen_by >= all_workers:
                break
            assert time.monotonic() < deadline, (
                f"item {item_id} matchable on {len(seen_by)} of {len(all_workers)} workers "
                f"after 20 s:\n{server.log()}")
            time.sleep(0.01)
        latencies.append(time.monotonic() - written)
        workers_seen |= all_workers
    assert len(workers_seen) == server.workers
    return latencies


def test_two_workers_over_one_sqlite_file(tmp_path):
    db = tmp_path / "w.hmdb"
    curate, match = make_token(db, "c", "curate"), make_token(db, "m", "match")
    with ServeProcess(db, 2, tmp_path / "serve.log") as server:
        latencies = converge(server, curate, match)
    assert max(latencies) < 5.0, latencies


def test_two_workers_over_postgresql(pg, tmp_path):
    url = pg.new_database("serve")
    curate, match = make_token(url, "c", "curate"), make_token(url, "m", "match")
    with ServeProcess(url, 2, tmp_path / "serve.log") as server:
        # Banks live in the shared store: made through one worker, every worker knows them.
        r = httpx.post(server.url + "/c/banks", json={"name": "PG_BANK"},
                       headers={"Authorization": f"Bearer {curate}"})
        assert r.status_code == 201, r.text
        latencies = converge(server, curate, match)
        deadline = time.monotonic() + 10
        while True:
            names = [httpx.get(server.url + "/c/banks",
                               headers={"Authorization": f"Bearer {match}",
                                        "Connection": "close"}).json() for _ in range(6)]
            if all({"name": "PG_BANK", "matching_enabled_ratio": 1.0} in n for n in names):
                break
            assert time.monotonic() < deadline, names
            time.sleep(0.1)
    assert max(latencies) < 5.0, latencies
