"""Cost of an 8-needle (real dihedral) query vs a 1-needle query through the public
CodeIndex API, 1 thread, r = 31: the user-facing form of issue 3's "<= 4x" target.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/dihedral_ratio.py 1000000 [runs]

The 1- and 8-needle queries alternate (which goes first alternates too), 200 queries x 3
rounds, medians; `runs` (default 1) repeats that and prints each run. The 8-needle query of
a pair is a *different* query (i + 100) than its 1-needle partner: the 8 needles include the
1-needle query itself, so running them right after it would find its buckets and candidate
rows in the cache (measured: the 10M 8/1 ratio reads ~0.3 lower that way). `--same-query`
keeps that older, biased pairing for comparison.
"""
import sys
import time

import numpy as np

import bench_index as bench
from hashmatch.codeindex import CodeIndex


def main(n: int, runs: int, same_query: bool) -> None:
    rng = np.random.default_rng(7)
    database = bench.make_database(n, "random", 0.25, rng)
    start = time.perf_counter()
    index = CodeIndex(256, threads=1)
    index.add(database, np.arange(n))
    build = time.perf_counter() - start
    queries = bench.make_queries(database, 200, 0.5, rng)
    needles = bench.dihedral_needles(queries, "real", rng)
    nq = len(queries)
    for _ in range(runs):
        one, eight = [], []
        for r in range(3):
            for i in range(nq):
                j = i if same_query else (i + nq // 2) % nq
                calls = [(one, needles[i, :1]), (eight, needles[j])]
                if not same_query and (i + r) % 2:
                    calls.reverse()
                for out, x in calls:
                    start = time.perf_counter()
                    index.range_search_multi(x, 31)
                    out.append(time.perf_counter() - start)
        a, b = np.median(one) * 1e3, np.median(eight) * 1e3
        print(f"n={n:,} build {build:.2f} s{' (same-query pairs)' if same_query else ''}; "
              f"1-needle {a:.3f} ms, 8-needle {b:.3f} ms, 8/1 = {b / a:.2f}", flush=True)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]), int(args[1]) if len(args) > 1 else 1, "--same-query" in sys.argv)
