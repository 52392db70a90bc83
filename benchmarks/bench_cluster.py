"""Clustering speed: hashmatch.cluster on n PDQ codes (random + planted near-duplicate groups).

The target (issue 5): 100k fingerprints at radius 31 in < 30 s on 2 cores. The peer in the
same run is FAISS ``IndexBinaryFlat.range_search`` of every code against all (the exact
all-pairs step alone, no grouping), as a FAISS-based tool would do it.

    .venv/bin/python benchmarks/bench_cluster.py                 # 100k, radius 31
    .venv/bin/python benchmarks/bench_cluster.py --n 20000 --no-peer
    .venv/bin/python benchmarks/bench_cluster.py --write-results # update RESULTS.md section
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

import hashmatch as hm
from hashmatch import _hamming

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
BEGIN, END = "<!-- BENCH_CLUSTER:BEGIN -->", "<!-- BENCH_CLUSTER:END -->"


def planted_codes(n: int, groups: int, group_size: int, max_flips: int, seed: int = 0):
    """Random 256-bit codes; the first groups*group_size rows form groups of edited copies
    (each copy of its group's base with 0..max_flips bits flipped), then all rows shuffled.
    Returns (codes, group id per row or -1)."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    group = np.full(n, -1, np.int64)
    for g in range(groups):
        start = g * group_size
        group[start:start + group_size] = g
        for k in range(1, group_size):
            copy = codes[start].copy()
            flips = rng.choice(256, rng.integers(0, max_flips + 1), replace=False)
            np.bitwise_xor.at(copy, flips // 8, (1 << (flips % 8)).astype(np.uint8))
            codes[start + k] = copy
    order = rng.permutation(n)
    return np.ascontiguousarray(codes[order]), group[order], rng.integers(0, 101, n)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.+)", out).group(1).strip()
        cpus = re.search(r"^CPU\(s\):\s*(\d+)", out, re.M).group(1)
    except (OSError, AttributeError):
        model, cpus = platform.processor() or "unknown CPU", str(os.cpu_count())
    return f"{model}, {cpus} CPUs (lscpu), popcount {_hamming.popcount_impl()}"


def run_hashmatch(codes, qualities, radius, threads):
    start = time.perf_counter()
    clusters = hm.cluster(codes, radius, qualities=qualities, threads=threads)
    return time.perf_counter() - start, clusters


def run_scan_only(codes, qualities, radius, threads):
    """The blocked triangle scan alone (multi-index hashing turned off)."""
    clustering = sys.modules["hashmatch.cluster"]
    saved = clustering.MIH_MIN_ROWS
    clustering.MIH_MIN_ROWS = len(codes) + 1
    try:
        return run_hashmatch(codes, qualities, radius, threads)
    finally:
        clustering.MIH_MIN_ROWS = saved


def run_faiss_pairs(codes, radius):
    import faiss

    start = time.perf_counter()
    index = faiss.IndexBinaryFlat(codes.shape[1] * 8)
    index.add(codes)
    lims, _, _ = index.range_search(codes, radius + 1)  # faiss: distance < radius + 1
    return time.perf_counter() - start, int(lims[-1] - len(codes)) // 2


def planted_groups_found(clusters, group) -> tuple[int, int]:
    """(planted groups recovered whole, planted groups total)."""
    member_cluster = {}
    for number, c in enumerate(clusters):
        for m in c.members:
            member_cluster[m.key] = number
    total = int(group.max()) + 1
    whole = 0
    for g in range(total):
        rows = np.flatnonzero(group == g)
        if len({member_cluster.get(int(r), -1 - int(r)) for r in rows}) == 1:
            whole += 1
    return whole, total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--radius", type=int, default=31)
    ap.add_argument("--groups", type=int, default=2_000)
    ap.add_argument("--group-size", type=int, default=10)
    ap.add_argument("--max-flips", type=int, default=24,
                    help="bits flipped in planted copies (<= radius/2 keeps groups whole)")
    ap.add_argument("--threads", type=int, default=None, help="default: all cores")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--write-results", action="store_true")
    args = ap.parse_args(argv)

    codes, group, qualities = planted_codes(args.n, args.groups, args.group_size, args.max_flips)
    times = []
    for _ in range(args.repeat):
        seconds, clusters = run_hashmatch(codes, qualities, args.radius, args.threads)
        times.append(seconds)
    whole, total = planted_groups_found(clusters, group)
    scan_seconds, scan_clusters = run_scan_only(codes, qualities, args.radius, args.threads)
    same = [c.to_dict() for c in scan_clusters] == [c.to_dict() for c in clusters]
    peer = None if args.no_peer else run_faiss_pairs(codes, args.radius)
    load = os.getloadavg()[0]
    busy = " (busy: other jobs shared the CPUs, so these times are pessimistic)" \
        if load > (os.cpu_count() or 1) else ""
    lines = [
        f"Machine: {machine()}; load average at the end {load:.1f}{busy}.",
        f"Command: `.venv/bin/python benchmarks/bench_cluster.py --n {args.n} "
        f"--radius {args.radius}`",
        "",
        "| what | n | radius | seconds (best of %d) | result |" % args.repeat,
        "|---|---|---|---|---|",
        f"| hashmatch.cluster (pairs + groups + representatives) | {args.n:,} | {args.radius} | "
        f"{min(times):.2f} (all: {', '.join(f'{t:.2f}' for t in times)}) | {len(clusters)} groups, "
        f"{whole}/{total} planted groups recovered whole |",
        f"| the same, triangle scan only (no multi-index hashing) | {args.n:,} | {args.radius} | "
        f"{scan_seconds:.2f} | {'identical groups' if same else 'DIFFERENT GROUPS'} |",
    ]
    if peer:
        lines.append(f"| FAISS IndexBinaryFlat.range_search, all vs all (pairs only) | "
                     f"{args.n:,} | "
                     f"{args.radius} | {peer[0]:.2f} | {peer[1]:,} pairs |")
        lines.append("")
        lines.append(f"Time ratio FAISS all-pairs / hashmatch.cluster: {peer[0] / min(times):.1f} "
                     "(above 1 = hashmatch faster, although it also builds the groups).")
    report = "\n".join(lines)
    print(report)
    if args.write_results:
        write_section(report)
    return 0 if whole == total and same else 1


def write_section(body: str) -> None:
    section = f"{BEGIN}\n## Clustering (hashmatch dedup / hashmatch.cluster)\n\n{body}\n{END}"
    text = "# Benchmark results\n"
    if os.path.exists(RESULTS):
        text = open(RESULTS, encoding="utf-8").read()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    with open(RESULTS, "w", encoding="utf-8") as out:
        out.write(text)


if __name__ == "__main__":
    sys.exit(main())
