"""Scale-out benchmark: many matchers on one PostgreSQL store, incremental sync, Dask hashing.

    .venv/bin/python benchmarks/bench_scale.py            # everything, ~10 min on 2 cores
    .venv/bin/python benchmarks/bench_scale.py --items 100000 --seconds 5   # quick look

Starts its own PostgreSQL server (tests/pg_server.py: initdb in a temp folder, durable
settings: fsync and synchronous_commit on) and measures:

1. sync vs rebuild at N items (default 1M PDQ hashes, seeded with COPY): a matcher's
   ``Index.sync()`` of 1,000 changes (a curator's 1,000 adds; and 500 adds + 500 removes)
   against a full rebuild (``load_codes`` of every code + building the in-memory index), and
   a cold ``Index.open`` without and with the local codes cache.
2. 2 and 4 matcher processes (``Index.open(url, sync_interval=1.0)``) on that store: queries/s
   (one PDQ hash per query, radius 31, exact) alone and while a writer process adds 1,000
   hashes/s (100 every 100 ms); time from add (the item's commit timestamp) to matchable (a
   matcher's sync that brought it in has returned).
3. Dask: hashing the public corpus (480 files) on a 2-worker LocalCluster
   (``threads_per_worker=1, processes=True``) next to the local process pool (2 workers), and
   a check that both give the same fingerprints.

4. ``--codes N ...`` (instead of 1-3): hash-list matching at platform scale (issue 19):
   ``Index.search_codes`` and ``query_hashes`` against faiss IndexBinaryFlat, faiss
   IndexBinaryMultiHash as python-threatexchange configures it (16x16, nflip 31 // 16),
   threatexchange's PDQIndex (up to --pdqindex-max) and the memory floor of one linear scan,
   1 thread, interleaved rounds; exactness against flat's results; with ``--workers`` three
   processes on one SQLite store and their RSS / PSS / USS. Results go to
   benchmarks/_work/bench_scale_codes.json (RESULTS.md, "Hash-list matching at platform
   scale", is written by hand from it).

Every figure is the median of several runs (counts in the output). Results go to
benchmarks/_work/bench_scale.json and, as a table, between the BENCH_SCALE markers of
benchmarks/RESULTS.md (``--no-write`` to skip).
"""
from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
CORPUS = REPO.parent / "shared" / "data" / "public-corpus"
OUT = REPO / "benchmarks" / "_work" / "bench_scale.json"
RESULTS = REPO / "benchmarks" / "RESULTS.md"


def median(values):
    return statistics.median(values) if values else float("nan")


def machine() -> str:
    info = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    cpus = fields.get("CPU(s)", "?").strip()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()[0]
    return (f"`lscpu`: {model}, {cpus} CPUs; {mem:.0f} GiB RAM; Python "
            f"{platform.python_version()}; load average at start {load:.1f}")


# -- seeding ---------------------------------------------------------------------------------
def seed(url: str, n: int, seed_value: int = 1) -> None:
    """N items with one random PDQ hash each, written with COPY (setup, not measured).

    The rows are what ``add_items`` would write (item, fingerprint, 'add' change), so the
    store passes integrity_check; COPY only makes seeding a million rows take seconds."""
    import psycopg

    from hashmatch.store import open_store

    open_store(url, create=True).close()
    rng = np.random.default_rng(seed_value)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    with psycopg.connect(url) as conn:
        first = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM hashmatch.items").fetchone()[0]
        assert first == 1, "seed a fresh database"
        with conn.cursor().copy("COPY hashmatch.items (path, added_at, source) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((None, "2024-01-01T00:00:00+00:00", "bench"))
        with conn.cursor().copy(
                "COPY hashmatch.fingerprints (item_id, algorithm, nbits, region, variant, code,"
                " quality) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i + 1, "pdq", 256, "full", "original", codes[i].tobytes(), 90))
        with conn.cursor().copy("COPY hashmatch.changes (item_id, op, at) FROM STDIN") as cp:
            for i in range(n):
                cp.write_row((i + 1, "add", "2024-01-01T00:00:00+00:00"))
        conn.execute("ANALYZE")


def add_random(index_or_store, n, rng, batch=100):
    from hashmatch.store import ItemRecord

    store = getattr(index_or_store, "store", index_or_store)
    ids = []
    for start in range(0, n, batch):
        codes = rng.integers(0, 256, (min(batch, n - start), 32), dtype=np.uint8)
        ids += [o.item_id for o in store.add_items([
            ItemRecord(path=None, sha256=None, source="bench",
                       fingerprints=[("pdq", 256, "full", "original", c.tobytes(), 90)])
            for c in codes], action="import")]
    return ids


# -- 1. sync vs rebuild ------------------------------------------------------------------------
def bench_sync(url: str, runs: int, cache_dir: str) -> dict:
    from hashmatch.index import Index
    from hashmatch.shard import Shard
    from hashmatch.store import open_store

    os.environ["HASHMATCH_CACHE_DIR"] = cache_dir
    result = {"rebuild_s": [], "load_codes_s": [], "build_s": [], "open_cold_s": [],
              "open_cached_s": [], "sync_1000_adds_s": [], "sync_500_500_s": []}
    with open_store(url) as store:
        n = store.count_items()
        for _ in range(runs):  # full rebuild = every code from the store + the in-memory index
            t0 = time.perf_counter()
            codes = store.load_codes("pdq", 256)
            t1 = time.perf_counter()
            shard = Shard("pdq", 256)
            shard.append(codes.fingerprint_ids, codes.item_ids, codes.codes, codes.regions,
                         codes.variants, codes.qualities)
            t2 = time.perf_counter()
            result["load_codes_s"].append(t1 - t0)
            result["build_s"].append(t2 - t1)
            result["rebuild_s"].append(t2 - t0)
            del codes, shard
    for _ in range(max(1, runs // 2)):
        for name in os.listdir(cache_dir):
            os.unlink(os.path.join(cache_dir, name))
        t0 = time.perf_counter()
        Index.open(url).close()  # cold: no cache; loads, builds, writes the cache
        result["open_cold_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with Index.open(url) as index:  # a current local cache
            result["open_cached_s"].append(time.perf_counter() - t0)
            index._cache_dirty = False
    rng = np.random.default_rng(7)
    with Index.open(url) as matcher, open_store(url) as writer:
        for _ in range(runs):
            add_random(writer, 1000, rng)  # a curator's second: 10 commits of 100
            t0 = time.perf_counter()
            applied = matcher.sync()
            result["sync_1000_adds_s"].append(time.perf_counter() - t0)
            assert applied == 1000, applied
            add_random(writer, 500, rng)
            live = matcher._shards[("pdq", 256)].item_ids
            writer.remove_items(rng.choice(live[: len(live) - 500], 500, replace=False).tolist())
            t0 = time.perf_counter()
            applied = matcher.sync()
            result["sync_500_500_s"].append(time.perf_counter() - t0)
            assert applied == 1000, applied
        matcher._cache_dirty = False
    summary = {key: median(values) for key, values in result.items()}
    summary["items"] = n
    summary["runs"] = runs
    summary["sync_vs_rebuild_pct"] = 100 * summary["sync_1000_adds_s"] / summary["rebuild_s"]
    summary["sync_mixed_vs_rebuild_pct"] = 100 * summary["sync_500_500_s"] / summary["rebuild_s"]
    return summary


# -- 2. matchers + writer -----------------------------------------------------------------------
def matcher_main(url, cache_dir, seconds, ready, go, results, seed_value):
    os.environ["HASHMATCH_CACHE_DIR"] = cache_dir
    from hashmatch.index import Index

    rng = np.random.default_rng(seed_value)
    needles = rng.integers(0, 256, (4096, 32), dtype=np.uint8)
    with Index.open(url, sync_interval=1.0) as index:
        index._cache_dirty = False
        ready.put(os.getpid())
        go.wait()
        queries, latencies, syncs = 0, [], 0
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            before = index._seq
            index.query_hashes(needles[queries % len(needles)][None, :])
            queries += 1
            if index._seq != before:  # this query synced first: when did those adds commit?
                syncs += 1
                now = time.time()
                added = [c.item_id for c in index.store.changes_since(before)
                         if c.op == "add" and c.seq <= index._seq]
                sample = added[:: max(1, len(added) // 20)]
                for item in index.store.get_items(sample).values():
                    from datetime import datetime

                    latencies.append(now - datetime.fromisoformat(item.added_at).timestamp())
        results.put({"queries": queries, "seconds": seconds, "latencies": latencies,
                     "syncs": syncs})


def writer_main(url, seconds, rate, go, results):
    from hashmatch.store import open_store

    rng = np.random.default_rng(11)
    batch = rate // 10
    with open_store(url) as store:
        go.wait()
        t0 = time.perf_counter()
        added = 0
        next_at = t0
        while time.perf_counter() - t0 < seconds:
            add_random(store, batch, rng, batch=batch)
            added += batch
            next_at += 0.1
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        results.put({"added": added, "seconds": time.perf_counter() - t0})


def bench_matchers(url, cache_dir, n_matchers, with_writer, seconds) -> dict:
    ctx = mp.get_context("spawn")
    ready, results, wresults = ctx.Queue(), ctx.Queue(), ctx.Queue()
    go = ctx.Event()
    procs = [ctx.Process(target=matcher_main,
                         args=(url, cache_dir, seconds, ready, go, results, 100 + k))
             for k in range(n_matchers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=600)
    writer = None
    if with_writer:
        writer = ctx.Process(target=writer_main, args=(url, seconds, 1000, go, wresults))
        writer.start()
        time.sleep(1.0)  # the writer connected
    go.set()
    per = [results.get(timeout=seconds + 600) for _ in procs]
    written = wresults.get(timeout=600) if writer else None
    for p in procs + ([writer] if writer else []):
        p.join(60)
    latencies = [x for r in per for x in r["latencies"]]
    return {
        "matchers": n_matchers,
        "writer": with_writer,
        "qps_total": sum(r["queries"] / r["seconds"] for r in per),
        "qps_per_matcher": [r["queries"] / r["seconds"] for r in per],
        "writer_rate": written["added"] / written["seconds"] if written else 0,
        "latency_median_s": median(latencies),
        "latency_p95_s": float(np.percentile(latencies, 95)) if latencies else float("nan"),
        "latency_max_s": max(latencies) if latencies else float("nan"),
        "latency_samples": len(latencies),
        "syncs": sum(r["syncs"] for r in per),
    }


# -- 3. Dask vs the local pool -------------------------------------------------------------------
def bench_dask(runs: int) -> dict:
    import distributed

    from hashmatch.hashing import hash_files

    files = sorted((CORPUS / "photos").glob("*.jpg")) + sorted((CORPUS / "receipts").glob("*.jpg"))
    files = [str(f) for f in files]
    local_times, dask_times = [], []
    local = hash_files(files, workers=2)  # warm the page cache and the pool start-up path
    for _ in range(runs):
        t0 = time.perf_counter()
        local = hash_files(files, workers=2)
        local_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    startup = time.perf_counter() - t0
    try:
        remote = hash_files(files, client=client)  # warm-up: workers import hashmatch
        for _ in range(runs):
            t0 = time.perf_counter()
            remote = hash_files(files, client=client)
            dask_times.append(time.perf_counter() - t0)
    finally:
        client.close()
        cluster.close()

    def key(r):
        return (r.path, r.sha256, r.error, [(f.hex(), f.quality) for f in r.fingerprints])

    same = [key(a) for a in local] == [key(b) for b in remote]
    return {"files": len(files), "runs": runs, "local_s": median(local_times),
            "dask_s": median(dask_times), "local_files_per_s": len(files) / median(local_times),
            "dask_files_per_s": len(files) / median(dask_times), "cluster_start_s": startup,
            "identical": same, "failed": sum(not r.ok for r in remote)}


# -- report ----------------------------------------------------------------------------------
def table(res: dict) -> str:
    s = res["sync"]
    out = io.StringIO()
    w = out.write
    w(f"Script: `benchmarks/bench_scale.py` ({res['command']}). Machine: {res['machine']}. "
      f"PostgreSQL {res['postgres']} started by the script (durable: fsync and "
      "synchronous_commit on), on the same 2 cores as every process below. Medians of the "
      f"runs shown; run on {res['date']}.\n\n")
    w(f"**Incremental sync vs full rebuild at {s['items']:,} PDQ hashes** ({s['runs']} runs)\n\n")
    w("| operation | median |\n|---|---|\n")
    w(f"| full rebuild: `load_codes` of every code + in-memory index | "
      f"**{s['rebuild_s']:.2f} s** ({s['load_codes_s']:.2f} s load + {s['build_s']:.2f} s build) |\n")
    w(f"| `Index.open` cold (no local cache; also writes it) | {s['open_cold_s']:.2f} s |\n")
    w(f"| `Index.open` with a current local codes cache | {s['open_cached_s']:.2f} s |\n")
    w(f"| `sync()` of 1,000 adds | **{1000 * s['sync_1000_adds_s']:.1f} ms = "
      f"{s['sync_vs_rebuild_pct']:.2f} % of a rebuild** |\n")
    w(f"| `sync()` of 500 adds + 500 removes | {1000 * s['sync_500_500_s']:.1f} ms = "
      f"{s['sync_mixed_vs_rebuild_pct']:.2f} % of a rebuild |\n\n")
    w(f"**Matchers on one store of {s['items']:,} hashes** (`Index.open(url, "
      f"sync_interval=1.0)`, one PDQ hash per query, radius 31, exact; {res['seconds']} s "
      "per row; writer = 100 hashes every 100 ms in its own process)\n\n")
    w("| matchers | writer | queries/s (all matchers) | per matcher | writer achieved | "
      "add -> matchable median / p95 / max |\n|---|---|---|---|---|---|\n")
    for m in res["matchers"]:
        per = " / ".join(f"{q:.0f}" for q in m["qps_per_matcher"])
        lat = (f"{m['latency_median_s']:.2f} / {m['latency_p95_s']:.2f} / "
               f"{m['latency_max_s']:.2f} s (n={m['latency_samples']})" if m["writer"] else "-")
        wr = f"{m['writer_rate']:.0f} hashes/s" if m["writer"] else "-"
        w(f"| {m['matchers']} | {'yes' if m['writer'] else 'no'} | {m['qps_total']:.0f} | "
          f"{per} | {wr} | {lat} |\n")
    d = res["dask"]
    w(f"\n**Bulk hashing of the public corpus ({d['files']} files, PDQ)** ({d['runs']} runs)\n\n")
    w("| engine | median time | files/s |\n|---|---|---|\n")
    w(f"| local process pool, 2 workers (`hash_files(..., workers=2)`) | {d['local_s']:.2f} s | "
      f"{d['local_files_per_s']:.0f} |\n")
    w(f"| Dask LocalCluster, 2 workers x 1 thread (`hash_files(..., client=client)`) | "
      f"{d['dask_s']:.2f} s | {d['dask_files_per_s']:.0f} |\n\n")
    w(f"Dask results identical to the local pool on all {d['files']} files (fingerprints, "
      f"qualities, SHA-256, errors): **{'yes' if d['identical'] else 'NO'}**. Starting the "
      f"LocalCluster took {d['cluster_start_s']:.1f} s (not in the times above).\n\n")
    w("Reading the figures: everything (PostgreSQL, the writer, 2-4 matchers, Dask workers) "
      "shares 2 cores, on a machine that other jobs were also loading, so queries/s do not "
      "grow with the number of matchers here; each matcher is one single-threaded process, "
      "and on a machine with a core per matcher they would add up (not measured here). "
      "Add -> matchable is dominated by `sync_interval=1.0` (a matcher syncs at most once a "
      "second, then the sync itself takes tens of ms): an explicit `sync()` makes a committed "
      "hash matchable as soon as it returns. The local pool's time includes starting its "
      "worker processes for each call (as `hash_files` does); the Dask cluster was already "
      "running, which is how a cluster is used.\n")
    return out.getvalue()


def write_results(text: str) -> None:
    begin, end = "<!-- BENCH_SCALE:BEGIN -->", "<!-- BENCH_SCALE:END -->"
    body = RESULTS.read_text() if RESULTS.exists() else ""
    block = f"{begin}\n## Scale-out: PostgreSQL matchers, incremental sync, Dask\n\n{text}{end}"
    if begin in body and end in body:
        body = body[: body.index(begin)] + block + body[body.index(end) + len(end):]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(body)


# -- 4. hash-list matching at platform scale (issue 19) ----------------------------------------
# ``--codes N ...``: N random PDQ codes with planted neighbours (bench_index's data: half the
# queries 1..31 bits from a stored code), exact radius 31, 1 thread. Peers in the same process
# and run, measured in interleaved rounds (each round: every peer's single queries, then its
# batch): hashmatch Index.search_codes and query_hashes, faiss IndexBinaryFlat, faiss
# IndexBinaryMultiHash as python-threatexchange's PDQMultiHashIndex configures it (16 maps of
# 16 bits, nflip = 31 // 16), threatexchange's PDQIndex (up to 1M), and the memory floor of one
# linear scan (the code bytes streamed once: a sum over them as uint64).
def seed_sqlite(path: str, codes: np.ndarray) -> None:
    """An SQLite store holding one item per code (raw inserts: setup, not measured)."""
    import sqlite3

    from hashmatch.store import open_store

    open_store(path, create=True).close()
    conn = sqlite3.connect(path)
    n = len(codes)
    with conn:
        conn.executemany("INSERT INTO items (id, path, added_at, source) VALUES (?, NULL, ?, ?)",
                         ((i + 1, "2024-01-01T00:00:00+00:00", "bench") for i in range(n)))
        conn.executemany(
            "INSERT INTO fingerprints (id, item_id, algorithm, nbits, region, variant, code, "
            "quality) VALUES (?, ?, 'pdq', 256, 'full', 'original', ?, 90)",
            ((i + 1, i + 1, codes[i].tobytes()) for i in range(n)))
        conn.executemany("INSERT INTO changes (seq, item_id, op, at) VALUES (?, ?, 'add', ?)",
                         ((i + 1, i + 1, "2024-01-01T00:00:00+00:00") for i in range(n)))
    conn.close()


def _memory_of(pid: int) -> dict:
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("Rss:", "Pss:", "Private_Clean:", "Private_Dirty:"):
                out[parts[0][:-1]] = int(parts[1]) * 1024
    out["Uss"] = out.pop("Private_Clean") + out.pop("Private_Dirty")
    return out


def _worker_main(db_path, ready, done):
    from hashmatch.index import Index

    index = Index.open(db_path)
    index.search_codes(np.zeros((1, 32), np.uint8), 31)
    ready.set()
    done.wait(600)
    index.store.close()


def bench_workers(db_path: str, n_workers: int = 3) -> list[dict]:
    """n_workers processes open one store (its codes cache is current): each one's RSS, PSS and
    USS once all are up."""
    ctx = mp.get_context("spawn")
    done = ctx.Event()
    rows = []
    procs = []
    for _ in range(n_workers):
        ready = ctx.Event()
        proc = ctx.Process(target=_worker_main, args=(db_path, ready, done))
        t0 = time.perf_counter()
        proc.start()
        ready.wait(900)
        procs.append((proc, time.perf_counter() - t0))
    for proc, start_s in procs:
        rows.append({"pid": proc.pid, "start_s": start_s, **_memory_of(proc.pid)})
    done.set()
    for proc, _ in procs:
        proc.join(60)
    return rows


def bench_codes(n: int, rounds: int, nq: int, batch: int, pdqindex_max: int, workers: bool):
    import faiss

    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_index as bi

    from hashmatch.index import Index

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(n + 19)
    t0 = time.perf_counter()
    db = bi.make_database(n, "random", 0.25, rng)
    queries = bi.make_queries(db, max(nq, batch), 0.5, rng)
    needles8 = bi.dihedral_needles(queries, "ideal", rng)
    res = {"n": n}
    work = tempfile.mkdtemp(prefix="hm-bench-codes-")
    db_path = os.path.join(work, "codes.hmdb")
    with_store = n <= 1_000_000 or workers
    if with_store:
        seed_sqlite(db_path, db)
    else:
        from hashmatch.store import open_store

        open_store(db_path, create=True).close()
    res["seed_s"] = time.perf_counter() - t0
    rss0 = bi.rss_bytes()
    t0 = time.perf_counter()
    index = Index.open(db_path, regions=False)
    if not with_store:  # the codes straight into memory (search_codes needs no metadata)
        index._shard("pdq", 256).append(np.arange(1, n + 1), np.arange(1, n + 1), db,
                                         np.full(n, "full", object),
                                         np.full(n, "original", object), np.full(n, 90))
    res["hashmatch_build_s"] = time.perf_counter() - t0
    res["hashmatch_rss_bytes_per_code"] = (bi.rss_bytes() - rss0) / n
    res["hashmatch_index_bytes_per_code"] = index._shards[("pdq", 256)].codes.nbytes / n

    t0 = time.perf_counter()
    flat = faiss.IndexBinaryFlat(256)
    flat.add(db)
    res["flat_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    multi = faiss.IndexBinaryMultiHash(256, 16, 16)
    multi.add(db)
    multi.nflip = 31 // 16
    res["multihash_build_s"] = time.perf_counter() - t0
    pdq_index = None
    if n <= pdqindex_max:
        from threatexchange.signal_type.pdq.pdq_index import PDQIndex

        t0 = time.perf_counter()
        pdq_index = PDQIndex.build([(row.tobytes().hex(), i + 1) for i, row in enumerate(db)])
        res["pdqindex_build_s"] = time.perf_counter() - t0

    def faiss_search(ix):
        def run(q):
            lims, dist, ids = ix.range_search(q, 32)  # faiss: distance < 32
            return lims, ids, dist
        return run

    def pytx_one(q):
        return pdq_index.query(q[0].tobytes().hex())

    peers = {
        "search_codes": lambda q: index.search_codes(q, 31),
        "query_hashes": (lambda q: index.query_hashes(q, max_distance=31)) if with_store
        else None,
        "faiss flat": faiss_search(flat),
        "faiss multihash 16x16 nflip=1": faiss_search(multi),
        "pytx PDQIndex": pytx_one if pdq_index is not None else None,
    }
    peers = {k: v for k, v in peers.items() if v is not None}
    # exactness against faiss flat on every query (batch call)
    lims_f, ids_f, _ = faiss_search(flat)(queries)
    want = bi.pairs_from_csr(lims_f, ids_f + 1)
    lims_h, ids_h, _ = index.search_codes(queries, 31)
    got = bi.pairs_from_csr(lims_h, ids_h)
    res["exact_equal_to_flat"] = got == want
    res["planted_pairs"] = len(want)
    lims_m, ids_m, _ = faiss_search(multi)(queries)
    res["multihash_equal_to_flat"] = bi.pairs_from_csr(lims_m, ids_m + 1) == want
    # 8 needles: an item hit by any of a query's dihedral variants
    l8, i8, _ = index.search_codes(needles8, 31)
    lf8, if8, _ = faiss_search(flat)(needles8.reshape(-1, 32))
    flat8 = {(q // 8, i + 1) for q, i in bi.pairs_from_csr(lf8, if8)}
    res["exact_equal_to_flat_8"] = bi.pairs_from_csr(l8, i8) == flat8

    single = {name: [] for name in peers}
    batched = {name: [] for name in peers}
    eight = {"search_codes": [], "search_codes 1 (same queries)": [], "faiss flat": []}
    floor = []
    view = db.view(np.uint64)
    for r in range(rounds):
        names = list(peers) if r % 2 == 0 else list(peers)[::-1]
        for name in names:
            fn = peers[name]
            for i in range(nq):
                q = queries[i:i + 1]
                t = time.perf_counter()
                fn(q)
                single[name].append(time.perf_counter() - t)
            if name != "pytx PDQIndex":
                for _ in range(3 if single[name] and single[name][-1] < 0.01 else 1):
                    t = time.perf_counter()
                    fn(queries[:batch])
                    batched[name].append((time.perf_counter() - t) / batch)
        for i in range(nq):
            for name, fn in (("search_codes", lambda: index.search_codes(needles8[i:i + 1], 31)),
                             ("search_codes 1 (same queries)",
                              lambda: index.search_codes(queries[i:i + 1], 31)),
                             ("faiss flat", lambda: flat.range_search(needles8[i], 32))):
                t = time.perf_counter()
                fn()
                eight[name].append(time.perf_counter() - t)
        t = time.perf_counter()
        view.sum()
        floor.append(time.perf_counter() - t)
    res["single_ms"] = {k: 1e3 * median(v) for k, v in single.items()}
    res["batch_us_per_query"] = {k: 1e6 * median(v) for k, v in batched.items() if v}
    res["eight_needle_ms"] = {k: 1e3 * median(v) for k, v in eight.items()}
    res["scan_floor_ms"] = 1e3 * min(floor)
    res["rounds"], res["queries"], res["batch"] = rounds, nq, batch
    res["paths"] = index._shards[("pdq", 256)].codes.parts["full"].paths(31, 1)
    flat = multi = pdq_index = None  # free the peers before the next size is built
    if workers and with_store:
        index.close()  # writes the codes cache the workers start from
        del index
        res["workers"] = bench_workers(db_path)
    return res


def bench_codeindex_only(n: int, rounds: int, nq: int, batch: int) -> dict:
    """``--index-only``: the 100M case on one machine. Only the code index itself (the
    structure Index.search_codes reads: CodeIndex, MIH tables), no store and no FAISS peer
    (its copy would not fit beside it): build, RSS, single / batch latency, 8 needles, the
    memory floor, exactness against one linear scan (_hamming.range_search_multi over the
    same array), and adding 10,000 codes (what a sync of 10,000 adds does to the index)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_index as bi

    from hashmatch import _hamming
    from hashmatch.codeindex import CodeIndex

    rng = np.random.default_rng(n + 19)
    rss0 = bi.rss_bytes()
    db = bi.make_database(n, "random", 0.25, rng)
    queries = bi.make_queries(db, max(nq, batch), 0.5, rng)
    needles8 = bi.dihedral_needles(queries, "ideal", rng)
    res = {"n": n, "index_only": True}
    t0 = time.perf_counter()
    index = CodeIndex(256, threads=1)
    index.add(db, np.arange(1, n + 1, dtype=np.int64))  # sealed in place: no copy of db
    res["build_s"] = time.perf_counter() - t0
    res["rss_bytes_per_code"] = (bi.rss_bytes() - rss0) / n
    res["index_bytes_per_code"] = index.nbytes / n
    res["paths"] = index.paths(31, 1)
    single, batched, eight, floor = [], [], [], []
    view = db.view(np.uint64)
    for _ in range(rounds):
        for i in range(nq):
            t = time.perf_counter()
            index.range_search(queries[i:i + 1], 31)
            single.append(time.perf_counter() - t)
            t = time.perf_counter()
            index.range_search_multi(needles8[i:i + 1], 31)
            eight.append(time.perf_counter() - t)
        t = time.perf_counter()
        index.range_search(queries[:batch], 31)
        batched.append((time.perf_counter() - t) / batch)
        t = time.perf_counter()
        view.sum()
        floor.append(time.perf_counter() - t)
    res["single_ms"] = 1e3 * median(single)
    res["batch_us_per_query"] = 1e6 * median(batched)
    res["eight_needle_ms"] = 1e3 * median(eight)
    res["scan_floor_ms"] = 1e3 * min(floor)
    lims, ids, _ = index.range_search(queries[:batch], 31)
    t0 = time.perf_counter()
    offsets, rows, _, _ = _hamming.range_search_multi(queries[:batch, None, :], db, 31,
                                                      threads=1)
    res["linear_scan_batch_s"] = time.perf_counter() - t0
    res["exact_equal_to_scan"] = (bi.pairs_from_csr(lims, ids)
                                  == bi.pairs_from_csr(offsets, rows + 1))
    res["pairs"] = int(lims[-1])
    more = rng.integers(0, 256, (10_000, 32), dtype=np.uint8)
    t0 = time.perf_counter()
    index.add(more, np.arange(n + 1, n + 10_001, dtype=np.int64))
    res["add_10000_s"] = time.perf_counter() - t0
    lims, ids, _ = index.range_search(more[:5], 0)
    res["added_found"] = ids.tolist() == list(range(n + 1, n + 6))
    res["peak_rss_bytes"] = bi.rss_bytes()
    return res


def codes_table(rows: list[dict]) -> str:
    lines = ["| N | peer | 1-query ms | batch us/q | x flat (1 q) | x flat (batch) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        flat1, flatb = r["single_ms"]["faiss flat"], r["batch_us_per_query"]["faiss flat"]
        for name, ms in r["single_ms"].items():
            b = r["batch_us_per_query"].get(name)
            lines.append(f"| {r['n']:,} | {name} | {ms:.3f} | "
                         f"{'-' if b is None else f'{b:.1f}'} | {flat1 / ms:.1f} | "
                         f"{'-' if b is None else f'{flatb / b:.1f}'} |")
        lines.append(f"| {r['n']:,} | memory floor (stream the codes once) | "
                     f"{r['scan_floor_ms']:.3f} | | | |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=15, help="per matcher row")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--skip", nargs="*", default=(), choices=("sync", "matchers", "dask"))
    parser.add_argument("--report-only", action="store_true",
                        help=f"rewrite the RESULTS.md section from {OUT.name}, measure nothing")
    parser.add_argument("--codes", type=int, nargs="*", default=None,
                        help="hash-list matching at these sizes (section 4) instead")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--pdqindex-max", type=int, default=1_000_000)
    parser.add_argument("--workers", action="store_true",
                        help="with --codes: 3 processes on one store, their RSS/PSS/USS")
    parser.add_argument("--index-only", action="store_true",
                        help="with --codes: the code index alone (the 100M case)")
    args = parser.parse_args()
    if args.codes and args.index_only:
        for n in args.codes:
            row = bench_codeindex_only(n, args.rounds, args.queries, args.batch)
            row["machine"] = machine()
            print(json.dumps(row), flush=True)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.with_name(f"bench_scale_index_{n}.json").write_text(json.dumps(row, indent=1))
        return
    if args.codes:
        out = OUT.with_name("bench_scale_codes.json")
        rows = []
        for n in args.codes:
            row = bench_codes(n, args.rounds, args.queries, args.batch, args.pdqindex_max,
                              args.workers)
            row["machine"] = machine()
            print(json.dumps(row), flush=True)
            rows.append(row)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, indent=1))
        print(codes_table(rows))
        return
    if args.report_only:
        write_results(table(json.loads(OUT.read_text())))
        return

    from pg_server import PgServer

    res = {"machine": machine(), "date": time.strftime("%Y-%m-%d"),
           "command": " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]),
           "seconds": args.seconds}
    cache_dir = tempfile.mkdtemp(prefix="hm-bench-cache-")
    with PgServer(durable=True) as server:
        import psycopg

        with psycopg.connect(server.url()) as conn:
            res["postgres"] = conn.execute("SHOW server_version").fetchone()[0]
        url = server.new_database("bench")
        if "sync" not in args.skip or "matchers" not in args.skip:
            t0 = time.perf_counter()
            seed(url, args.items)
            print(f"seeded {args.items:,} items in {time.perf_counter() - t0:.1f} s", flush=True)
        if "sync" not in args.skip:
            res["sync"] = bench_sync(url, args.runs, cache_dir)
            print(json.dumps(res["sync"], indent=1), flush=True)
        if "matchers" not in args.skip:
            from hashmatch.index import Index

            os.environ["HASHMATCH_CACHE_DIR"] = cache_dir
            Index.open(url).close()  # a current cache: matchers start in seconds
            res["matchers"] = []
            for n in (2, 4):
                for with_writer in (False, True):
                    row = bench_matchers(url, cache_dir, n, with_writer, args.seconds)
                    print(json.dumps(row), flush=True)
                    res["matchers"].append(row)
    if "dask" not in args.skip:
        res["dask"] = bench_dask(max(3, args.runs // 2 + 1))
        print(json.dumps(res["dask"]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1))
    if not args.skip:
        text = table(res)
        print(text)
        if not args.no_write:
            write_results(text)


if __name__ == "__main__":
    main()
