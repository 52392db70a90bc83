"""Cost of an 8-needle (real dihedral) query vs a 1-needle query through the public
CodeIndex API, 1 thread, r = 31: the user-facing form of issue 3's "<= 4x" target.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/dihedral_ratio.py 1000000

The 1- and 8-needle queries alternate, 200 queries x 3 rounds, medians.
"""
import sys
import time

import numpy as np

import bench_index as bench
from hashmatch.codeindex import CodeIndex


def main(n: int) -> None:
    rng = np.random.default_rng(7)
    database = bench.make_database(n, "random", 0.25, rng)
    start = time.perf_counter()
    index = CodeIndex(256, threads=1)
    index.add(database, np.arange(n))
    build = time.perf_counter() - start
    queries = bench.make_queries(database, 200, 0.5, rng)
    needles = bench.dihedral_needles(queries, "real", rng)
    one, eight = [], []
    for _ in range(3):
        for i in range(len(queries)):
            start = time.perf_counter()
            index.range_search_multi(needles[i, :1], 31)
            one.append(time.perf_counter() - start)
            start = time.perf_counter()
            index.range_search_multi(needles[i], 31)
            eight.append(time.perf_counter() - start)
    a, b = np.median(one) * 1e3, np.median(eight) * 1e3
    print(f"n={n:,} build {build:.2f} s; 1-needle {a:.3f} ms, 8-needle {b:.3f} ms, 8/1 = {b / a:.2f}")


if __name__ == "__main__":
    main(int(sys.argv[1]))
