"""Query cost at 1M items with and without the low-frequency prefilter (shard.PREFILTER_THRESHOLD,
PREFILTER_KEY_RADIUS).

    .venv/bin/python benchmarks/bench_prefilter.py                     # ~3 min, ~4 GB RAM
    .venv/bin/python benchmarks/bench_prefilter.py --real --configs "exact;crop=15/16;crop=15/4"
    .venv/bin/python benchmarks/bench_prefilter.py --real \
        --query benchmarks/_work/robustness/full/queries/crop_10/00130.jpg --query-item 130

Same setup as bench_robustness.latency_ratio (1M items in the benchmark database's role mix,
rows in item order, the needles of the benchmark's first post query, ``search_shard`` on 1
thread, random and clustered code mixes), but every configuration of the prefilter runs in
one process on the same shards, interleaved within each round: the machine is shared and
noisy, and only figures taken side by side compare. A configuration is a set of
role=threshold/key-radius pairs (the low-frequency threshold of 64 bits and the radius of
the 16-bit bucket key, 16 = every bucket, the default when left out; "exact" = none: every
role scanned exactly, the search before the prefilter). Prints per mix and configuration the median ms, the ratio to the full-frame-only
query at the default's radius, and the matches found. ``--real`` adds a third mix drawn from
the rows the full robustness suite's database stores (hashed once through an Index, cached in
_work/robustness/db_codes.npz): real crop windows cluster far more than random codes, so it
shows how many rows the prefilter lets through for a real query.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import bench_robustness as br  # noqa: E402

from hashmatch import shard as hm_shard  # noqa: E402
from hashmatch import regions as rg  # noqa: E402
from hashmatch.hashers.pdq import low_frequency_codes, low_frequency_keys  # noqa: E402
from hashmatch.needles import query_fingerprints  # noqa: E402
from hashmatch.search import search_shard  # noqa: E402
from hashmatch.shard import Shard  # noqa: E402

# Rows per item on the full robustness suite's database (2250 items): 1 full frame, 1.63
# regions (content, embedded), 17.99 crop windows.
ROLE_SHARE = {"region": 1.63, "crop": 17.99}
SAMPLE_QUERY = br.WORK / "full" / "queries" / "post" / "00000.jpg"


def database_codes() -> dict:
    """The PDQ rows a hashmatch Index stores for the full suite's database (codes, region
    names, the database position of each row's item), cached in _work/robustness."""
    import tempfile

    import edits
    from hashmatch.index import Index

    cache = br.WORK / "db_codes.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    db, _, _ = br.build_dataset(False, list(edits.EDITS))
    with tempfile.TemporaryDirectory() as tmp, \
            Index.open(os.path.join(tmp, "db.hmdb"), create=True) as index:
        report = index.add_files(db, workers=os.cpu_count())
        position = {o.item_id: i for i, o in enumerate(report.outcomes) if o.item_id is not None}
        shard = index._shards[("pdq", 256)]
        live = np.nonzero(shard.live[:shard.n])[0]
        out = {"codes": shard.codes_of(live),
               "regions": np.array([shard.names[c] for c in shard.region_codes[live]], str),
               "db_position": np.array([position[i] for i in shard.item_ids[live]], np.int64)}
    np.savez(cache, **out)
    return out


def real_mix(items: int, exclude_position: int = 0):
    """Stored rows drawn from the real database's rows of each role (role mix ROLE_SHARE),
    leaving out the sample query's own source item, 4 random bits flipped in each so that
    the copies are not exact duplicates: the low-frequency pass rate of real crop windows
    (which cluster far more than random codes) at 1M items."""
    rng = np.random.default_rng(1)
    real = database_codes()
    roles = np.array([rg.stored_role(name) for name in real["regions"]])
    usable = real["db_position"] != exclude_position
    per_role = {"full": items}
    per_role.update({role: int(round(items * share)) for role, share in ROLE_SHARE.items()})
    item_ids, names, codes = [], [], []
    for role, n in per_role.items():
        pool = np.nonzero(usable & (roles == role))[0]
        picks = pool[rng.integers(0, len(pool), n)]
        item_ids.append(np.arange(n) % items)
        names.append(real["regions"][picks].astype(object))
        codes.append(real["codes"][picks])
    item_ids, names, codes = (np.concatenate(a) for a in (item_ids, names, codes))
    order = np.argsort(item_ids, kind="stable")
    item_ids, names, codes = item_ids[order], names[order], codes[order]
    flips = rng.integers(0, 256, (len(codes), 4))
    for k in range(4):
        codes[np.arange(len(codes)), flips[:, k] // 8] ^= (1 << (flips[:, k] % 8)).astype(np.uint8)
    return item_ids, names, codes


def parse_config(text: str) -> dict:
    """role -> (threshold, key radius)."""
    if text.strip() in ("", "exact"):
        return {}
    out = {}
    for pair in text.split(","):
        role, value = pair.split("=")
        threshold, _, key = value.partition("/")
        out[role] = (int(threshold), int(key or 16))
    return out


def build_shard(item_ids, region_names, codes):
    shard = Shard("pdq", 256)  # crop windows and regions keep their bucketed prefilter codes
    n = len(item_ids)
    shard.append(np.arange(n), item_ids, codes, region_names,
                 np.full(n, "original", object), np.full(n, 100))
    for part in shard.codes.parts.values():
        part.threads = 1
    return shard


def passing_rows(codes, needles, threshold, key_radius) -> int:
    """Rows some needle's prefilter lets through (low-frequency and key distances)."""
    low, n_low = low_frequency_codes(codes), low_frequency_codes(needles)
    keys, n_keys = low_frequency_keys(low), low_frequency_keys(n_low)
    low, n_low = low.view("<u8")[:, 0], n_low.view("<u8")[:, 0]
    ok = np.zeros(len(codes), bool)
    for j in range(len(needles)):
        ok |= ((np.bitwise_count(low ^ n_low[j]) <= threshold)
               & (np.bitwise_count(keys ^ n_keys[j]) <= key_radius))
    return int(ok.sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--configs",
                        default="exact;crop=15/16,region=15/16;crop=15/4,region=15/4",
                        help="';'-separated configurations, each role=threshold[/key radius],"
                             "... or exact")
    parser.add_argument("--query", default=str(SAMPLE_QUERY))
    parser.add_argument("--query-item", type=int, default=0,
                        help="database position of the query's source, left out of --real")
    parser.add_argument("--real", action="store_true",
                        help="also a mix of the full suite's own stored rows (real_mix)")
    args = parser.parse_args(argv)
    configs = {text: parse_config(text) for text in args.configs.split(";")}
    needles = query_fingerprints(args.query, ("pdq",), False, True, True)[0]
    full_needles = [needle for needle in needles if needle[1] == "full"]
    per_role = {role: sum(role in rg.search_roles(region, variant) for _, region, variant in needles)
                for role in rg.ROLES}
    print(f"{len(needles)} needles; per stored role: {per_role}; role share {ROLE_SHARE}",
          flush=True)
    searches, found, shards = {}, {}, {}
    mixes = dict(br.latency_mixes(ROLE_SHARE, needles, args.items))
    if args.real:
        mixes["real"] = real_mix(args.items, args.query_item)
    for mix, (item_ids, names, codes) in mixes.items():
        t0 = time.time()
        full = names == "full"
        shard = build_shard(item_ids, names, codes)
        full_only = build_shard(item_ids[full], names[full], codes[full])
        print(f"{mix}: {len(item_ids):,} rows built in {time.time() - t0:.0f}s", flush=True)
        shards[mix] = shard
        searches[mix, "full31"] = lambda s=full_only: search_shard(
            s, "pdq", full_needles, 31, None, 0, False)
        searches[mix, "full_wide"] = lambda s=full_only: search_shard(
            s, "pdq", full_needles, None, None, None, True)
        for text in configs:
            searches[mix, text] = lambda s=shard: search_shard(s, "pdq", needles, None, None,
                                                               None, True)
    times = {key: [] for key in searches}

    def run(key):
        mix, name = key
        config = configs.get(name, {})
        hm_shard.PREFILTER_THRESHOLD.clear()
        hm_shard.PREFILTER_THRESHOLD.update({role: t for role, (t, _) in config.items()})
        hm_shard.PREFILTER_KEY_RADIUS.clear()
        hm_shard.PREFILTER_KEY_RADIUS.update({role: k for role, (_, k) in config.items()})
        start = time.perf_counter()
        result = searches[key]()
        elapsed = time.perf_counter() - start
        found[key] = sorted(result)
        return elapsed

    for key in searches:
        run(key)  # warm-up
    for _ in range(args.repeat):
        for key in searches:
            times[key].append(run(key))
    ms = {key: float(np.median(values)) * 1000 for key, values in times.items()}
    print(f"medians of {args.repeat} interleaved rounds, 1 thread, {args.items:,} items, "
          f"load {os.getloadavg()[0]:.2f}")
    crop_needles = np.stack(
        [fp.bits for fp, region, variant in needles if "crop" in rg.search_roles(region, variant)])
    for mix, (_, names, codes) in mixes.items():
        crop = codes[np.char.startswith(names.astype(str), "crop:")]
        passed = {f"{t}/{k}": passing_rows(crop, crop_needles, t, k)
                  for t, k in sorted({c["crop"] for c in configs.values() if "crop" in c})}
        print(f"{mix}: crop rows passing the prefilter (of {len(crop):,}): {passed}")
        wide = ms[mix, "full_wide"]
        print(f"{mix}: full frames only, radius 31 (MIH) {ms[mix, 'full31']:.2f} ms; "
              f"radius {rg.PDQ_MAX_DISTANCE + rg.PDQ_MARGIN} {wide:.2f} ms")
        for text in configs:
            print(f"  {text or '-':>24}: {ms[mix, text]:6.2f} ms  x{ms[mix, text] / wide:.1f} "
                  f"(x{ms[mix, text] / ms[mix, 'full31']:.0f} vs radius 31); "
                  f"matches {found[mix, text]}")


if __name__ == "__main__":
    main()
