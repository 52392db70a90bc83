"""Peak memory and time of importing a long hash list (issue 16 item 10).

    .venv/bin/python benchmarks/bench_import.py               # 2,000,000 lines, ~2-3 minutes
    .venv/bin/python benchmarks/bench_import.py --lines 200000

Writes a list of random PDQ hashes in python-threatexchange's text form (``pdq <hex>``), then
imports it into a new SQLite store in a fresh process (``hashlists.import_hash_list`` with the
file's path: streamed) and prints that process's peak RSS (resource.getrusage) and wall time,
split into the import itself (store written, one transaction) and the Index's sync of the new
codes into memory afterwards.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

CHILD = r"""
import json, os, resource, sys, time
import hashmatch as hm
from hashmatch import hashlists
path, db = sys.argv[1], sys.argv[2]
index = hm.Index.open(db, create=True)
sync = index.sync
timings = {}
def timed_sync():
    timings["import_s"] = time.monotonic() - started
    timings["import_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return sync()
index.sync = timed_sync
calls = []
started = time.monotonic()
report = hashlists.import_hash_list(index, path, progress=calls.append)
timings["total_s"] = time.monotonic() - started
index.close()
timings.update(peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               added=len(report.added), imported=report.imported, progress_calls=len(calls))
print(json.dumps(timings))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "list.txt")
        rng = np.random.default_rng(0)
        with open(path, "w") as out:
            for start in range(0, args.lines, 100_000):
                codes = rng.integers(0, 256, (min(100_000, args.lines - start), 32), np.uint8)
                out.write("".join(f"pdq {row.tobytes().hex()}\n" for row in codes))
        size = os.path.getsize(path)
        result = subprocess.run([sys.executable, "-c", CHILD, path, os.path.join(work, "x.hmdb")],
                                capture_output=True, text=True, check=True,
                                env=dict(os.environ, HASHMATCH_CACHE_DIR=os.path.join(work, "c")))
        figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=1))
    print(f"| import of {args.lines:,} `pdq <hex>` lines ({size / 1e6:.0f} MB) | "
          f"{figures['peak_rss_mb']:.0f} MB peak RSS ({figures['import_rss_mb']:.0f} MB before "
          f"the index sync) | {figures['total_s']:.0f} s ({figures['import_s']:.0f} s "
          "import + sync) |")


if __name__ == "__main__":
    main()
