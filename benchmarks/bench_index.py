"""Index benchmark: hashmatch.CodeIndex against FAISS and python-threatexchange, same data.

    .venv/bin/python benchmarks/bench_index.py --sizes 100000 1000000 10000000

Data: N PDQ codes, "random" (uniform bits) and "clustered" (real hashes from
../shared/data/pdq-reference/hashlists/haystack.txt, each bit flipped with probability
--noise). 1,000 queries, --planted share of them 1..31 bits from a stored code, the rest
random. Exact radius 31 (distance <= 31).

8-needle queries: the 8 dihedral variants of each query, as PDQ computes them (--dihedral
real, default): the bit transforms of PDQ's dct16OriginalTo* (transpose and/or complement of
parity classes of the DCT sign matrix) applied to the query, then XOR the residual that real
images show between pdq_dihedral_from_rgb and those ideal transforms (~7 bits per variant:
negating coefficients moves the median), taken from the reference JPEGs. --dihedral ideal
skips the residual.

Peers: faiss IndexBinaryFlat (range_search), faiss IndexBinaryMultiHash configured as
python-threatexchange does (16 maps x 16 bits, nflip = 31 // 16), and threatexchange's
PDQIndex itself (hex strings in, Python objects out) up to --pdqindex-max rows.
Slow peers answer --slow-queries of the queries (stated in the output). Times are medians.
"""
from __future__ import annotations

import argparse
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faiss  # noqa: E402

from hashmatch import _hamming  # noqa: E402
from hashmatch.codeindex import CodeIndex  # noqa: E402
from hashmatch.hashers.pdq import dihedral_from_hash  # noqa: E402

HAYSTACK = ROOT.parent / "shared/data/pdq-reference/hashlists/haystack.txt"
IMAGES = ROOT.parent / "shared/data/pdq-reference/images"
RADIUS = 31


# -- data ------------------------------------------------------------------------------------
def flip_exact(codes, nflips, rng):
    """Flip exactly nflips[i] random bits of codes[i]."""
    bits = np.unpackbits(codes, axis=1)
    for i, d in enumerate(nflips):
        bits[i, rng.choice(256, int(d), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def make_database(n, kind, noise, rng, chunk=1_000_000):
    if kind == "random":
        return rng.integers(0, 256, (n, 32), dtype=np.uint8)
    base = np.array([np.frombuffer(bytes.fromhex(h), np.uint8)
                     for h in HAYSTACK.read_text().split()])
    out = np.empty((n, 32), np.uint8)
    for lo in range(0, n, chunk):
        m = min(chunk, n - lo)
        mask = np.packbits(rng.random((m, 256), dtype=np.float32) < noise, axis=1)
        out[lo:lo + m] = base[rng.integers(0, len(base), m)] ^ mask
    return out


def make_queries(db, nq, planted, rng):
    q = rng.integers(0, 256, (nq, 32), dtype=np.uint8)
    k = int(nq * planted)
    q[:k] = flip_exact(db[rng.integers(0, len(db), k)], rng.integers(1, 32, k), rng)
    return q


dihedral_ideal = dihedral_from_hash  # PDQ's bit transforms (hashers/pdq.py)


def dihedral_residuals(max_images=64):
    """real pdq_dihedral_from_rgb hashes XOR dihedral_ideal(their original), per image."""
    from PIL import Image

    from hashmatch.hashers.pdq import pdq_dihedral_from_rgb

    files = sorted(IMAGES.rglob("*.jpg"))
    out = []
    for f in files[:: max(1, len(files) // max_images)][:max_images]:
        real, _ = pdq_dihedral_from_rgb(np.asarray(Image.open(f).convert("RGB")))
        out.append(real ^ dihedral_ideal(real[0])[0])
    return np.array(out)


def dihedral_needles(queries, mode, rng):
    needles = dihedral_ideal(queries)
    if mode == "real":
        res = dihedral_residuals()
        needles ^= res[rng.integers(0, len(res), len(queries))]
    return needles


# -- measurement helpers --------------------------------------------------------------------
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def median_latency(fn, queries, repeats=1):
    times = []
    for _ in range(repeats):
        for q in queries:
            t = time.perf_counter()
            fn(q)
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def median_of(fn, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def pairs_from_csr(lims, ids):
    lims = np.asarray(lims, dtype=np.int64)
    q = np.repeat(np.arange(len(lims) - 1), np.diff(lims))
    return set(zip(q.tolist(), np.asarray(ids).tolist()))


# -- peers ----------------------------------------------------------------------------------
class HashmatchPeer:
    name = "hashmatch CodeIndex"

    def __init__(self, db, threads):
        self.index = CodeIndex(256, threads=threads)
        self.index.add(db, np.arange(len(db), dtype=np.int64))
        self.threads = threads

    def nbytes(self):
        return self.index.nbytes

    def search(self, q):
        lims, ids, _ = self.index.range_search(q, RADIUS, threads=self.threads)
        return lims, ids

    def search_multi(self, needles):
        lims, ids, _, _ = self.index.range_search_multi(needles, RADIUS, threads=self.threads)
        return lims, ids


class FaissPeer:
    def __init__(self, db, threads):
        faiss.omp_set_num_threads(threads)
        self.index = self.make(db)
        self.threads = threads

    def nbytes(self):
        return None

    def search(self, q):
        faiss.omp_set_num_threads(self.threads)
        lims, _, ids = self.index.range_search(q, RADIUS + 1)  # faiss: distance < radius
        return lims, ids

    def search_multi(self, needles):
        nq, m, nb = needles.shape
        lims, _, ids = self.index.range_search(needles.reshape(nq * m, nb), RADIUS + 1)
        return lims, ids


class FlatPeer(FaissPeer):
    name = "faiss IndexBinaryFlat"

    def make(self, db):
        index = faiss.IndexBinaryFlat(256)
        index.add(db)
        return index

    def nbytes(self):
        return self.index.ntotal * 32


class MultiHashPeer(FaissPeer):
    name = "faiss IndexBinaryMultiHash 16x16"

    def make(self, db):
        index = faiss.IndexBinaryMultiHash(256, 16, 16)
        index.add(db)
        index.nflip = RADIUS // 16
        return index


class PDQIndexPeer:
    name = "threatexchange PDQIndex"

    def __init__(self, db, threads):
        from threatexchange.signal_type.pdq.pdq_index import PDQIndex

        faiss.omp_set_num_threads(threads)
        self.index = PDQIndex([(row.tobytes().hex(), i) for i, row in enumerate(db)])
        self.threads = threads

    def nbytes(self):
        return None

    def search(self, q):
        faiss.omp_set_num_threads(self.threads)
        if len(q) == 1:
            matches = self.index.query(q[0].tobytes().hex())
            return np.array([0, len(matches)]), np.array([m.metadata for m in matches])
        # batch: PDQIndex has no batch query; its underlying index does
        hexes = [row.tobytes().hex() for row in q]
        res = self.index.index.search_with_distance_in_result(hexes, RADIUS)
        ids = [[m[0] for m in res[h]] for h in hexes]
        return np.concatenate([[0], np.cumsum([len(x) for x in ids])]), np.concatenate(
            [np.array(x, dtype=np.int64) for x in ids] or [np.zeros(0, np.int64)])

    def search_multi(self, needles):
        return self.search(needles.reshape(-1, 32))


# -- one configuration -----------------------------------------------------------------------
def bench_peer(cls, db, queries, needles8, truth, threads, nsample, batch_runs):
    gc.collect()
    rss0 = rss_bytes()
    t = time.perf_counter()
    peer = cls(db, threads)
    build = time.perf_counter() - t
    rss = rss_bytes() - rss0
    nbytes = peer.nbytes() or rss
    sample = queries[:nsample]
    one = median_latency(lambda q: peer.search(q[None]), sample)
    batch_q = queries[: max(nsample, 100)] if nsample < len(queries) else queries
    batch = median_of(lambda: peer.search(batch_q), batch_runs) / len(batch_q)
    eight = median_latency(lambda n: peer.search_multi(n[None]), needles8[:nsample])
    lims, ids = peer.search(batch_q)
    found = pairs_from_csr(lims, ids)
    expected = {p for p in truth if p[0] < len(batch_q)}
    recall = len(found & expected) / max(len(expected), 1)
    exact = found == expected
    peer = None  # free the index before the next configuration is built
    gc.collect()
    return dict(build_s=build, bytes_per_code=nbytes / len(db), rss_bytes_per_code=rss / len(db),
                single_ms=1e3 * one, batch_us_per_query=1e6 * batch, eight_needle_ms=1e3 * eight,
                eight_over_one=eight / one, recall=recall, exact=exact,
                queries_sampled=len(sample), batch_queries=len(batch_q))


def report(path: Path, plot: Path):
    """Markdown table (for RESULTS.md) and the latency plot from a results JSON."""
    data = json.loads(path.read_text())
    rows = data["results"]
    print(f"Machine: {data['machine']} (lscpu model name), 2 cores.\n")
    print("| N | data | thr | index | build s | B/code | 1-query ms | batch us/q "
          "| 8-needle ms | 8/1 | recall |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sampled = "" if r["queries_sampled"] >= 200 else f" ({r['queries_sampled']} q)"
        print(f"| {r['n']:,} | {r['kind']} | {r['threads']} | {r['peer']}{sampled} "
              f"| {r['build_s']:.2f} | {r['bytes_per_code']:.0f} | {r['single_ms']:.3f} "
              f"| {r['batch_us_per_query']:.1f} | {r['eight_needle_ms']:.3f} "
              f"| {r['eight_over_one']:.1f} | {r['recall']:.4f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, kind in zip(axes, ["random", "clustered"]):
        for peer in dict.fromkeys(r["peer"] for r in rows):
            pts = sorted((r["n"], r["single_ms"]) for r in rows
                         if r["peer"] == peer and r["kind"] == kind and r["threads"] == 1)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=peer)
        ax.set(xscale="log", yscale="log", xlabel="stored PDQ codes",
               title=f"{kind} data, r <= 31, 1 thread")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("single-query latency, median (ms)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=110)


def ratio(argv):
    """--ratio N {real,ideal} NSUB:{p,s,m} ...: 1-needle vs 8-needle MIH latency, interleaved
    (query i alone and the 8 dihedral needles of query i + 100, which goes first
    alternating), 200 random queries x 3 rounds, 1 thread, directly on the tables of each
    layout (p = plain, s = parity-split, m = mixed parity: plain widths over
    _hamming.pdq_parity_mix). Not query i's own needles: they include query i, whose
    buckets and rows its 1-needle run has just brought into the cache."""
    n, mode = int(argv[0]), argv[1]
    rng = np.random.default_rng(n + 6)
    db = make_database(n, "random", 0.25, rng)
    q = make_queries(db, 200, 0.5, rng)
    needles = dihedral_needles(q, mode, rng)
    for spec in argv[2:]:
        nsub, split = int(spec.split(":")[0]), {"p": 0, "s": 1, "m": 2}[spec.split(":")[1]]
        st, wd = _hamming.mih_layout(256, nsub, split)
        t = time.perf_counter()
        off, rows = _hamming.mih_build(db, st, wd, threads=1, split_parity=split)
        build = time.perf_counter() - t

        def search(x):
            _hamming.mih_range_search_multi(x, db, st, wd, off, rows, RADIUS, threads=1,
                                            split_parity=split)
        one, eight = [], []
        for r in range(3):
            for i in range(len(q)):
                j = (i + len(q) // 2) % len(q)
                calls = [(one, q[i:i + 1, None]), (eight, needles[j:j + 1])]
                for out, x in (calls if (i + r) % 2 == 0 else calls[::-1]):
                    t = time.perf_counter()
                    search(x)
                    out.append(time.perf_counter() - t)
        o, e = 1e3 * np.median(one), 1e3 * np.median(eight)
        print(f"n={n} {mode} nsub={nsub} split={split} widths={wd.tolist()} build={build:.2f}s "
              f"1={o:.3f}ms 8={e:.3f}ms 8/1={e / o:.2f}", flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--ratio":
        ratio(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--report":
        report(Path(sys.argv[2]), ROOT / "benchmarks/index_latency.png")
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 10_000_000])
    ap.add_argument("--kinds", nargs="+", default=["random", "clustered"])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--planted", type=float, default=0.5)
    ap.add_argument("--noise", type=float, default=0.25)
    ap.add_argument("--dihedral", choices=["real", "ideal"], default="real",
                    help="8-needle queries: dihedral variants with or without the real residual")
    ap.add_argument("--slow-queries", type=int, default=100,
                    help="queries answered by peers slower than ~1 ms/query at large N")
    ap.add_argument("--pdqindex-max", type=int, default=1_000_000)
    ap.add_argument("--peers", nargs="+", default=["hashmatch", "flat", "multihash", "pdqindex"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/_work/index_results.json")
    args = ap.parse_args()

    machine = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in machine.splitlines()
                  if l.startswith("Model name")), platform.processor())
    print(f"# machine: {model}, {faiss.omp_get_max_threads()} threads, "
          f"popcount: {_hamming.popcount_impl()}, faiss {faiss.__version__}", flush=True)
    classes = {"hashmatch": HashmatchPeer, "flat": FlatPeer, "multihash": MultiHashPeer,
               "pdqindex": PDQIndexPeer}
    results = []
    for n in args.sizes:
        for kind in args.kinds:
            rng = np.random.default_rng(n + len(kind))
            db = make_database(n, kind, args.noise, rng)
            queries = make_queries(db, args.queries, args.planted, rng)
            needles8 = dihedral_needles(queries, args.dihedral, rng)
            truth_index = CodeIndex(256, method="scan")
            truth_index.add(db, np.arange(n))
            lims, ids, _ = truth_index.range_search(queries, RADIUS)
            truth = pairs_from_csr(lims, ids)
            del truth_index
            for peer in args.peers:
                if peer == "pdqindex" and n > args.pdqindex_max:
                    continue
                for threads in args.threads:
                    slow = peer != "hashmatch" and n >= 1_000_000
                    nsample = args.slow_queries if slow else min(200, len(queries))
                    r = bench_peer(classes[peer], db, queries, needles8, truth, threads,
                                   nsample, 1 if slow else 3)
                    r.update(peer=classes[peer].name, n=n, kind=kind, threads=threads,
                             planted_pairs=len(truth))
                    results.append(r)
                    print(json.dumps(r), flush=True)
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    args.out.write_text(json.dumps(dict(machine=model, results=results), indent=1))


if __name__ == "__main__":
    main()
