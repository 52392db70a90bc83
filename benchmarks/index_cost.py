"""Indexing cost with regions vs plain PDQ hash_file (issue 4: ">= 50 % of the foundation's
PDQ images/s").

Each round takes a fresh subset of the robustness benchmark's database files (nothing is
hashed twice, so no warm per-file caches) and hashes it both ways -- plain
``hashmatch.hash_file`` and ``fingerprint_file(..., regions=True)`` (what ``Index.add_files``
computes per file) -- in alternating order, measuring process time.

    python benchmarks/index_cost.py [ROUNDS]     (run bench_robustness.py once first: it
                                                  writes the files)
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# edits.py (the synthetic adverts and the re-post edits) lives with the tests, which use it too;
# appended, so the benchmarks folder wins any name both folders have (reliability)
sys.path.append(str(Path(__file__).resolve().parent.parent / "tests"))
import bench_robustness as br  # noqa: E402
import edits  # noqa: E402

from hashmatch import hash_file  # noqa: E402
from hashmatch.hashing import fingerprint_file  # noqa: E402

FILES_PER_ROUND = 40


def main(rounds: int = 10) -> None:
    db, _, _ = br.build_dataset(False, list(edits.EDITS))
    ratios, plain_total, regions_total = [], 0.0, 0.0
    for r in range(rounds):
        subset = db[r::rounds * 6][:FILES_PER_ROUND]

        def plain():
            start = time.process_time()
            for path in subset:
                hash_file(path)
            return time.process_time() - start

        def regions():
            start = time.process_time()
            for path in subset:
                fingerprint_file(path, ("pdq",), regions=True)
            return time.process_time() - start

        if r % 2:  # alternate which goes first (page and CPU caches)
            b, a = regions(), plain()
        else:
            a, b = plain(), regions()
        ratios.append(a / b)
        plain_total += a
        regions_total += b
    ratios.sort()
    n = FILES_PER_ROUND * rounds
    print(f"{rounds} rounds of {FILES_PER_ROUND} fresh files: plain {plain_total / n * 1000:.2f} "
          f"ms/file, with regions {regions_total / n * 1000:.2f} ms/file; speed ratio "
          f"{plain_total / regions_total:.3f} (per round: median {ratios[len(ratios) // 2]:.3f}, "
          f"{ratios[0]:.3f}-{ratios[-1]:.3f})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10)
