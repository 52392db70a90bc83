"""Every answer of the matcher on a fixed suite, written down so that two versions of the code
can be compared answer by answer (a refactor must change none).

    .venv/bin/python benchmarks/match_snapshot.py --out /tmp/before.jsonl     # ~15 min
    ... change the code ...
    .venv/bin/python benchmarks/match_snapshot.py --out /tmp/after.jsonl
    .venv/bin/python benchmarks/match_snapshot.py --compare /tmp/before.jsonl /tmp/after.jsonl

The suite is bench_precision's files (build them first: `bench_precision.py --quick` or a
full run writes them under benchmarks/_work/precision): its 80 known items plus 400 of its
distractors indexed; queried with every positive (the known items through 26 edits) and every
negative (unknown images as is and edited), templates listed too, and the same queries through
query_hashes (the PDQ of each query file), so the plain rule is covered. Each line: the query,
and every field of every Match in order (floats as repr, so a change in the last digit shows).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import hashmatch as hm  # noqa: E402

WORK = HERE / "_work" / "precision"


def suite(work: Path) -> tuple[list[str], list[str]]:
    """(files to index, files to query)."""
    distractors = sorted(str(p) for p in (work / "distractors").glob("*.jpg"))[:400]
    queries = sorted(str(p) for p in (work / "positives").rglob("*.jpg"))
    queries += sorted(str(p) for p in (work / "negatives").glob("*.jpg"))
    queries += sorted(str(p) for p in (work / "unknown").glob("*.jpg"))
    if not distractors or not queries:
        sys.exit(f"no suite under {work}: run benchmarks/bench_precision.py --quick first")
    # The known items as bench_precision lists them (its positives are named by an item's
    # place in that list); the files exist, so build() only lists them.
    sys.path.insert(0, str(HERE))
    import bench_precision

    known, _, _, _ = bench_precision.build(quick=False)
    return known + distractors, queries


ROOT = str(HERE.parent) + "/"


def _plain(value):
    """JSON-ready, floats exact, and paths relative to the checkout (so snapshots taken in
    two worktrees compare)."""
    if isinstance(value, str):
        return value.replace(ROOT, "")
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def snapshot(out: Path, work: Path, every: int = 1) -> None:
    indexed, queries = suite(work)
    queries = queries[::every]
    with tempfile.TemporaryDirectory() as tmp, open(out, "w") as sink:
        with hm.Index.open(str(Path(tmp) / "snap.hmdb"), create=True) as index:
            index.add_files(indexed, workers=2)
            for done, result in enumerate(index.iter_query_many(queries, templates=True,
                                                                workers=2), start=1):
                matches = [_plain(m.to_dict()) for m in result.matches]
                sink.write(json.dumps({"query": _plain(result.path), "error": result.error,
                                       "matches": matches}) + "\n")
                pdq = [fp for fp in result.fingerprints if fp.algorithm == "pdq"]
                if pdq:
                    by_hash = index.query_hashes([pdq[0].hex()])[0]
                    sink.write(json.dumps({"query": "hash:" + _plain(result.path),
                                           "matches": [_plain(m.to_dict()) for m in by_hash]})
                               + "\n")
                if done % 250 == 0:
                    print(f"{done}/{len(queries)}", file=sys.stderr)


def compare(a: Path, b: Path) -> int:
    """Every query of the smaller snapshot must be in the larger one (a snapshot taken with
    --every is compared on its own queries) and have the same answer there."""
    left = {x["query"]: x for x in map(json.loads, open(a))}
    right = {x["query"]: x for x in map(json.loads, open(b))}
    small, large = (left, right) if len(left) <= len(right) else (right, left)
    missing = [q for q in small if q not in large]
    if missing:
        print(f"{len(missing)} queries of one snapshot are not in the other, e.g. {missing[0]}")
        return 2
    differ = [q for q in small if small[q] != large[q]]
    matches = sum(len(x["matches"]) for x in small.values())
    print(f"{len(small)} queries, {matches} matches compared: {len(differ)} answers differ")
    for name in differ[:20]:
        print("  ", name)
    return 1 if differ else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, default=WORK,
                        help="bench_precision's work folder (default: %(default)s)")
    parser.add_argument("--every", type=int, default=1,
                        help="query every Nth file only (3: ~5 min; default: all, ~15 min)")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = parser.parse_args()
    if args.compare:
        return compare(*args.compare)
    if not args.out:
        parser.error("--out or --compare")
    snapshot(args.out, args.work, args.every)
    return 0


if __name__ == "__main__":
    sys.exit(main())
