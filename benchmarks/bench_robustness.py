"""Robustness: recall per edit at <= 1% query false alarm, hashmatch vs PDQ/pHash/dHash peers.

    .venv/bin/python benchmarks/bench_robustness.py --quick      # < 3 min, for development
    nohup .venv/bin/python benchmarks/bench_robustness.py > benchmarks/_work/robustness.log &

Data (written once under benchmarks/_work/robustness, then every system hashes FROM THE FILES):
- originals: public-corpus photos and receipts + synthetic adverts (ID cards from one template,
  chat screenshots, price posters; benchmarks/edits.py);
- database = originals + distractors: the rest of the corpus, many more adverts from the same
  templates (hard negatives), and edited distractors (screenshots/posts/borders of other images);
- queries: every edit of benchmarks/edits.py applied to every original (positives), plus
  negative queries: held-out images, each through a random edit, that are not in the database.

A query's false alarm: any database item other than its source within the threshold. For each
system we sweep the threshold, report recall per edit at the largest threshold whose query
false-alarm rate (over all queries) is <= 1%, and recall / false alarm at the system's default.
Writes the RESULTS.md section between the BENCH_ROBUSTNESS markers and benchmarks/robustness.png.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import edits  # noqa: E402

from hashmatch import regions  # noqa: E402
from hashmatch._hamming import distance_matrix  # noqa: E402
from hashmatch.hashers.grid import grid_codes  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "public-corpus"
WORK = HERE / "_work" / "robustness"
RESULTS = HERE / "RESULTS.md"
PLOT = HERE / "robustness.png"
BEGIN, END = "<!-- BENCH_ROBUSTNESS:BEGIN -->", "<!-- BENCH_ROBUSTNESS:END -->"
FALSE_ALARM_BUDGET = 0.01
NO_MATCH = 10_000  # distance standing for "no candidate"


# --------------------------------------------------------------------------------------------
# PDQ: our own implementation when it is there, else the C++ reference behind one adapter

def _load_pdq():
    try:
        from hashmatch.hashers.pdq import pdq_hash_image  # noqa: F401
        return "hashmatch"
    except Exception:  # noqa: BLE001 - a colleague is writing it; develop against pdqhash
        return "pdqhash"


PDQ_IMPL = _load_pdq()


def pdq_code(image: Image.Image):
    """(packed 32-byte code, quality) of one image."""
    if PDQ_IMPL == "hashmatch":
        from hashmatch.hashers.pdq import pdq_hash_image
        fp = pdq_hash_image(image)
        return fp.bits, fp.quality
    import pdqhash
    vec, quality = pdqhash.compute(np.asarray(image.convert("RGB")))
    return np.packbits(vec.astype(bool)), quality


def pdq_dihedral_codes(image: Image.Image):
    """((8, 32) codes in PDQ's dihedral order, quality)."""
    import pdqhash
    if PDQ_IMPL == "hashmatch":
        from hashmatch.hashers import pdq as ours
        if hasattr(ours, "pdq_hash_dihedral"):
            fps = ours.pdq_hash_dihedral(image)
            return np.stack([fp.bits for fp in fps]), fps[0].quality
    vecs, quality = pdqhash.compute_dihedral(np.asarray(image.convert("RGB")))
    return np.stack([np.packbits(v.astype(bool)) for v in vecs]), quality


# --------------------------------------------------------------------------------------------
# dataset

@dataclass
class Query:
    path: str
    edit: str
    category: str
    true_item: int  # database item index, -1 for negative queries


def _corpus(kind: str) -> list[Path]:
    return sorted((DATA / kind).glob("*.jpg"))


def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        if path.suffix == ".png":
            image.save(path, optimize=False, compress_level=1)
        else:
            image.convert("RGB").save(path, quality=92)
    return str(path)


def _sizes(quick: bool) -> dict:
    if quick:
        return dict(photos=20, receipts=6, ads=15, db_photos=120, db_receipts=20, db_ads=150,
                    db_edited=40, neg_photos=40, neg_receipts=10, neg_ads=60)
    return dict(photos=100, receipts=30, ads=90, db_photos=200, db_receipts=30, db_ads=1650,
                db_edited=150, neg_photos=80, neg_receipts=10, neg_ads=210)


def build_dataset(quick: bool, edit_names: list[str]):
    """Write originals, distractors and queries to disk; returns (db paths, #originals, queries)."""
    n = _sizes(quick)
    # Queries and edited distractors depend on the mode's split: one folder per mode (adverts
    # depend only on their index and are shared).
    mode_dir = WORK / ("quick" if quick else "full")
    photos, receipts = _corpus("photos"), _corpus("receipts")
    rng = np.random.default_rng(20240501)
    photos = [photos[i] for i in rng.permutation(len(photos))]
    receipts = [receipts[i] for i in rng.permutation(len(receipts))]
    orig_photos = photos[:n["photos"]]
    db_photos = photos[n["photos"]:n["photos"] + n["db_photos"]]
    neg_photos = photos[len(photos) - n["neg_photos"]:]
    orig_receipts = receipts[:n["receipts"]]
    db_receipts = receipts[n["receipts"]:n["receipts"] + n["db_receipts"]]
    neg_receipts = receipts[len(receipts) - n["neg_receipts"]:]
    # Every card/poster gets its own picture: a random window of any corpus photo (the spec:
    # same template, different names AND photos).
    portraits = [Image.open(p).convert("RGB").reduce(2) for p in photos]
    kinds = ("id", "chat", "poster")

    def advert_paths(start: int, count: int, folder: str) -> list[str]:
        out = []
        for i in range(start, start + count):
            kind = kinds[i % 3]
            path = WORK / folder / f"{kind}_{i:05d}.png"
            if not path.exists():
                _save(edits.make_advert(kind, i, portraits), path)
            out.append(str(path))
        return out

    originals = [str(p) for p in orig_photos + orig_receipts]
    originals += advert_paths(0, n["ads"], "adverts")
    distractors = [str(p) for p in db_photos + db_receipts]
    distractors += advert_paths(100_000, n["db_ads"], "adverts")
    # Edited distractors: posts, screenshots, borders of images that are not originals.
    pool = db_photos + db_receipts
    for i in range(n["db_edited"]):
        src = Image.open(pool[i % len(pool)]).convert("RGB")
        name = edit_names[i % len(edit_names)]
        ext = ".png" if name == "phone_screenshot" else ".jpg"
        distractors.append(_save(edits.apply_edit(name, src, 900_000 + i),
                                 mode_dir / "db_edited" / f"{i:05d}_{name}{ext}"))
    db = originals + distractors

    queries: list[Query] = []
    for item, src_path in enumerate(originals):
        src = None
        for name in edit_names:
            ext = ".png" if name == "phone_screenshot" else ".jpg"
            path = mode_dir / "queries" / name / f"{item:05d}{ext}"
            if not path.exists():
                src = src or Image.open(src_path).convert("RGB")
                _save(edits.apply_edit(name, src, item), path)
            queries.append(Query(str(path), name, edits.EDITS[name][0], item))
    negatives = [str(p) for p in neg_photos + neg_receipts]
    negatives += advert_paths(500_000, n["neg_ads"], "negatives_src")
    for i, src_path in enumerate(negatives):
        name = edit_names[i % len(edit_names)]
        ext = ".png" if name == "phone_screenshot" else ".jpg"
        path = mode_dir / "negatives" / f"{i:05d}_{name}{ext}"
        if not path.exists():
            _save(edits.apply_edit(name, Image.open(src_path).convert("RGB"), 700_000 + i), path)
        queries.append(Query(str(path), "negative:" + name, "negative", -1))
        queries.append(Query(src_path, "negative:plain", "negative", -1))
    return db, len(originals), queries


# --------------------------------------------------------------------------------------------
# systems: each hashes a file into rows (database side) or needles (query side)
#
# A hashed file is a dict of arrays: "pdq" (k, 32) / "phash" (k, 8) codes, optional "grid"
# (k, 32) aligned with "pdq", "region" (k,) names, "quality" (k,).

def _open(path: str, max_side: int | None = None) -> Image.Image:
    """Decode like hashmatch does; ``max_side``: then shrink (box filter) for region hashing."""
    from hashmatch import decode
    image = decode.decode(path, mode="RGB", draft_min_side=max_side).image
    return regions.working_copy(image, max_side) if max_side else image


def hm_default_store(path: str, crops: bool = True, grid: bool = True) -> dict:
    """All candidate stored regions (crop windows included: the evaluation can leave them out,
    so one hashing pass measures the default and the +crops variant), with grid codes for
    the verification experiment."""
    image = _open(path, regions.WORKING_SIDE)
    rows = regions.storage_regions(image, crops=crops)
    codes, quality, grids = [], [], []
    for region in rows:
        crop = region.image()
        code, q = pdq_code(crop)
        codes.append(code)
        quality.append(q)
        grids.append(grid_codes(crop)[0] if grid else code)
    return {"pdq": np.stack(codes), "grid": np.stack(grids), "quality": np.array(quality),
            "region": np.array([r.name for r in rows])}


def hm_default_query(path: str) -> dict:
    image = _open(path, regions.WORKING_SIDE)
    found = regions.query_regions(image)
    codes, quality, grids, names = [], [], [], []
    for region in found:
        crop = region.image()
        if region.name == "full":  # rotations/flips: one DCT gives all 8 (query side only)
            dih, q = pdq_dihedral_codes(crop)
            codes += list(dih)
            grids += list(grid_codes(crop, dihedral=True))
            quality += [q] * 8
            names += ["full"] + ["full:d%d" % v for v in range(1, 8)]
        else:
            code, q = pdq_code(crop)
            codes.append(code)
            grids.append(grid_codes(crop)[0])
            quality.append(q)
            names.append(region.name)
    return {"pdq": np.stack(codes), "grid": np.stack(grids), "quality": np.array(quality),
            "region": np.array(names)}


def hm_default_store_lean(path: str) -> dict:
    """What the default actually stores (for images/s)."""
    return hm_default_store(path, crops=False, grid=False)


def grid_full_store(path: str) -> dict:
    return {"pdq": grid_codes(_open(path, regions.WORKING_SIDE))}


def grid_full_query(path: str) -> dict:
    return {"pdq": grid_codes(_open(path, regions.WORKING_SIDE), dihedral=True)}


def hm_pdq_full(path: str) -> dict:
    import hashmatch
    if PDQ_IMPL == "hashmatch":
        fp = hashmatch.hash_file(path)
        return {"pdq": fp.bits[None], "quality": np.array([fp.quality])}
    code, q = pdq_code(_open(path))
    return {"pdq": code[None], "quality": np.array([q])}


def hm_pdq_full_dihedral(path: str) -> dict:
    codes, q = pdq_dihedral_codes(_open(path))
    return {"pdq": codes, "quality": np.array([q] * 8)}


def pdqhash_plain(path: str) -> dict:
    import pdqhash
    vec, q = pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))
    return {"pdq": np.packbits(vec.astype(bool))[None], "quality": np.array([q])}


def pdqhash_dihedral(path: str) -> dict:
    import pdqhash
    vecs, q = pdqhash.compute_dihedral(np.asarray(Image.open(path).convert("RGB")))
    return {"pdq": np.stack([np.packbits(v.astype(bool)) for v in vecs]),
            "quality": np.array([q] * 8)}


def imagehash_phash(path: str) -> dict:
    import imagehash
    return {"phash": np.packbits(imagehash.phash(Image.open(path)).hash.reshape(-1))[None]}


def imagehash_dhash(path: str) -> dict:
    import imagehash
    return {"phash": np.packbits(imagehash.dhash(Image.open(path)).hash.reshape(-1))[None]}


# name -> (store hasher, query hasher, code key, default threshold)
SYSTEMS = {
    "hashmatch default": (hm_default_store, hm_default_query, "pdq", None),
    "hashmatch pdq full+dihedral": (hm_pdq_full, hm_pdq_full_dihedral, "pdq", 31),
    "pdqhash": (pdqhash_plain, pdqhash_plain, "pdq", 31),
    "pdqhash dihedral": (pdqhash_plain, pdqhash_dihedral, "pdq", 31),
    "grid full+dihedral": (grid_full_store, grid_full_query, "pdq", 40),
    "imagehash phash": (imagehash_phash, imagehash_phash, "phash", 10),
    "imagehash dhash": (imagehash_dhash, imagehash_dhash, "phash", 10),
}


def _run(args):
    fn, path = args
    try:
        return fn(path)
    except Exception as exc:  # noqa: BLE001 - report, never stop the benchmark
        print(f"  failed {path}: {exc}", file=sys.stderr)
        return None


def hash_all(fn, paths: list[str], workers: int) -> list[dict]:
    with Pool(workers) as pool:
        return pool.map(_run, [(fn, p) for p in paths], chunksize=8)


def images_per_second(fn, paths: list[str]) -> float:
    """Single process, files from disk (page cache warm)."""
    start = time.perf_counter()
    for p in paths:
        fn(p)
    return len(paths) / (time.perf_counter() - start)


# --------------------------------------------------------------------------------------------
# matching: per (query, item) the best pair of (query needle, stored row)

def _flatten(hashed: list[dict], key: str):
    """Concatenate rows; returns (codes, owner index per row, dict of other per-row arrays)."""
    codes, owner, extra = [], [], {}
    for i, h in enumerate(hashed):
        if h is None:
            continue
        codes.append(h[key])
        owner.append(np.full(len(h[key]), i))
        for k, v in h.items():
            if k != key:
                extra.setdefault(k, []).append(v)
    return (np.concatenate(codes), np.concatenate(owner),
            {k: np.concatenate(v) for k, v in extra.items()})


def best_per_item(store: list[dict], queries: list[dict], key: str, n_items: int,
                  chunk: int = 4096):
    """(n_queries, n_items) minimum Hamming distance over every needle/row pair."""
    db, db_owner, _ = _flatten(store, key)
    q, q_owner, _ = _flatten(queries, key)
    best = np.full((len(queries), n_items), NO_MATCH, dtype=np.int32)
    order = np.argsort(db_owner, kind="stable")
    db, db_owner = np.ascontiguousarray(db[order]), db_owner[order]
    starts = np.r_[0, np.nonzero(np.diff(db_owner))[0] + 1]
    items = db_owner[starts]
    for lo in range(0, len(q), chunk):
        d = distance_matrix(np.ascontiguousarray(q[lo:lo + chunk]), db)
        per_item = np.minimum.reduceat(d, starts, axis=1)
        owners = q_owner[lo:lo + chunk]
        np.minimum.at(best, (owners[:, None], items[None, :]), per_item)
    return best


def candidate_pairs(store: list[dict], queries: list[dict], radius: int, chunk: int = 4096):
    """Every (query needle, stored row) pair within ``radius`` PDQ bits, with the grid distance
    of the same pair: the raw material of the hashmatch default decision rule."""
    db, db_owner, db_x = _flatten(store, "pdq")
    q, q_owner, q_x = _flatten(queries, "pdq")
    out = []
    for lo in range(0, len(q), chunk):
        d = distance_matrix(np.ascontiguousarray(q[lo:lo + chunk]), db)
        qi, ri = np.nonzero(d <= radius)
        if not qi.size:
            continue
        g = _pairwise(q_x["grid"][lo + qi], db_x["grid"][ri])
        out.append(dict(query=q_owner[lo + qi], item=db_owner[ri], pdq=d[qi, ri], grid=g,
                        q_region=q_x["region"][lo + qi], s_region=db_x["region"][ri],
                        q_quality=q_x["quality"][lo + qi], s_quality=db_x["quality"][ri]))
    return {k: np.concatenate([o[k] for o in out]) for k in out[0]}


_POP8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _POP8[np.bitwise_xor(a, b)].sum(axis=1, dtype=np.int32)


# --------------------------------------------------------------------------------------------
# the hashmatch default decision rule (what regions.recommended thresholds encode)

def default_scores(pairs: dict, n_queries: int, n_items: int, policy: dict) -> np.ndarray:
    """(n_queries, n_items) score: the best pair's PDQ distance if it passes the policy, else
    NO_MATCH. The sweep then thresholds the PDQ distance; the policy's gates are fixed."""
    # Rotated/flipped query needles are scanned against stored full frames only (the index
    # keeps them apart): that is what keeps the query cost within 3x of full-frame-only.
    keep = ~(np.char.startswith(pairs["q_region"].astype(str), "full:d")
             & (pairs["s_region"].astype(str) != "full"))
    min_q = policy["min_quality"]
    keep &= (pairs["q_quality"] >= min_q) & (pairs["s_quality"] >= min_q)
    # Optional verification: the grid hash of the same two regions must agree too.
    keep &= pairs["grid"] <= policy["grid_max"]
    distance = pairs["pdq"].astype(np.int32)
    for prefix, penalty in regions.REGION_PENALTY.items():
        involved = (np.char.startswith(pairs["q_region"].astype(str), prefix)
                    | np.char.startswith(pairs["s_region"].astype(str), prefix))
        distance = distance + penalty * involved
    score = np.full((n_queries, n_items), NO_MATCH, dtype=np.int32)
    np.minimum.at(score, (pairs["query"][keep], pairs["item"][keep]), distance[keep])
    return regions.distinct_best(score, policy["margin"])


# --------------------------------------------------------------------------------------------
# evaluation

def true_and_wrong(best: np.ndarray, queries: list[Query]):
    true_item = np.array([q.true_item for q in queries])
    rows = np.arange(len(queries))
    d_true = np.where(true_item >= 0, best[rows, np.maximum(true_item, 0)], NO_MATCH)
    masked = best.copy()
    masked[rows[true_item >= 0], true_item[true_item >= 0]] = NO_MATCH
    return d_true, masked.min(axis=1)


def operating_point(d_true, d_wrong, is_pos, max_t: int):
    """Largest threshold whose query false-alarm rate is within budget."""
    best_t = -1
    for t in range(max_t + 1):
        if (d_wrong <= t).mean() <= FALSE_ALARM_BUDGET:
            best_t = t
    return best_t


def evaluate(name, best, queries, default_t, max_t):
    d_true, d_wrong = true_and_wrong(best, queries)
    is_pos = np.array([q.true_item >= 0 for q in queries])
    t = operating_point(d_true, d_wrong, is_pos, max_t)
    edits_ = sorted({q.edit for q in queries if q.true_item >= 0}, key=list(edits.EDITS).index)
    edit_of = np.array([q.edit for q in queries])
    result = {"threshold": t, "default": default_t, "per_edit": {}, "per_edit_default": {}}
    for e in edits_:
        sel = edit_of == e
        result["per_edit"][e] = float((d_true[sel] <= t).mean())
        result["per_edit_default"][e] = float((d_true[sel] <= default_t).mean())
    result["recall"] = float((d_true[is_pos] <= t).mean())
    result["false_alarm"] = float((d_wrong <= t).mean())
    result["recall_default"] = float((d_true[is_pos] <= default_t).mean())
    result["false_alarm_default"] = float((d_wrong <= default_t).mean())
    result["neg_false_alarm_default"] = float((d_wrong[~is_pos] <= default_t).mean())
    cats = np.array([q.category for q in queries])
    result["per_category"] = {c: float((d_true[(cats == c)] <= t).mean())
                              for c in edits.CATEGORY_TARGETS if (cats == c).any()}
    return result


# --------------------------------------------------------------------------------------------
# report

def write_report(results, speeds, meta, quick):
    systems = list(results)
    lines = [BEGIN, "## Robustness", "",
             f"`{meta['command']}` on {meta['machine']}; PDQ implementation: {meta['pdq_impl']}. "
             f"Database: {meta['n_db']} items ({meta['n_originals']} originals + "
             f"{meta['n_db'] - meta['n_originals']} distractors); queries: {meta['n_pos']} edited "
             f"copies + {meta['n_neg']} negative queries. Recall at the largest threshold whose "
             f"query false-alarm rate (any wrong item matched, over all queries) is <= 1%.", ""]
    lines.append("| edit | " + " | ".join(systems) + " |")
    lines.append("|---" * (len(systems) + 1) + "|")
    for e in results[systems[0]]["per_edit"]:
        lines.append(f"| {e} | " + " | ".join(f"{results[s]['per_edit'][e]:.2f}" for s in systems) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{results[s]['recall']:.3f}**" for s in systems) + " |")
    lines.append("| threshold at 1% FA | " + " | ".join(str(results[s]['threshold']) for s in systems) + " |")
    lines.append("| false alarm there | " + " | ".join(f"{results[s]['false_alarm']:.3f}" for s in systems) + " |")
    lines.append("| default threshold | " + " | ".join(str(results[s]['default']) for s in systems) + " |")
    lines.append("| recall at default | " + " | ".join(f"{results[s]['recall_default']:.3f}" for s in systems) + " |")
    lines.append("| FA at default (all / negative queries) | " + " | ".join(
        f"{results[s]['false_alarm_default']:.3f} / {results[s]['neg_false_alarm_default']:.3f}" for s in systems) + " |")
    lines.append("| images/s (index side, 1 process) | " + " | ".join(f"{speeds[s]:.0f}" for s in systems) + " |")
    lines += ["", "Per category, recall at <= 1% false alarm (target in brackets):", "",
              "| category | " + " | ".join(systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for c, target in edits.CATEGORY_TARGETS.items():
        if c in results[systems[0]]["per_category"]:
            lines.append(f"| {c} ({target or '-'}) | " + " | ".join(
                f"{results[s]['per_category'][c]:.2f}" for s in systems) + " |")
    lines += ["", meta.get("notes", ""), "", "![robustness](robustness.png)", END]
    section = "\n".join(lines)
    if quick:
        print(section)
        return
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    RESULTS.write_text(text)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    systems = list(results)
    edit_names = list(results[systems[0]]["per_edit"])
    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.8 / len(systems)
    for i, s in enumerate(systems):
        ax.bar(np.arange(len(edit_names)) + i * width, [results[s]["per_edit"][e] for e in edit_names],
               width, label=f"{s} ({results[s]['recall']:.2f})")
    ax.set_xticks(np.arange(len(edit_names)) + 0.4, edit_names, rotation=60, ha="right")
    ax.set_ylabel("recall at <= 1% query false alarm")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine() -> str:
    import platform
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    return f"{model}, {os.cpu_count()} cores"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--ablations-only", action="store_true",
                        help="re-evaluate the saved candidate pairs, rewrite the ablation table")
    args = parser.parse_args(argv)
    if args.ablations_only:
        rewrite_ablations(args.quick)
        return
    started = time.time()
    edit_names = list(edits.EDITS)
    db, n_orig, queries = build_dataset(args.quick, edit_names)
    print(f"dataset: {len(db)} db items, {len(queries)} queries ({time.time() - started:.0f}s)", flush=True)
    qpaths = [q.path for q in queries]
    results, speeds, meta_extra = {}, {}, {}
    sample = db[:: max(1, len(db) // (60 if args.quick else 200))]
    policy = DEFAULT_POLICY
    for name in args.systems.split(","):
        store_fn, query_fn, key, default_t = SYSTEMS[name]
        t0 = time.time()
        store = hash_all(store_fn, db, args.workers)
        qh = hash_all(query_fn, qpaths, args.workers)
        speeds[name] = images_per_second(SPEED_FN.get(name, store_fn), sample)
        if name == "hashmatch default":
            pairs = candidate_pairs(store, qh, radius=PAIR_RADIUS)
            np.savez_compressed(WORK / ("pairs_quick.npz" if args.quick else "pairs.npz"), **pairs)
            with_crops = "hashmatch default + 4 stored crop windows"
            results[with_crops] = evaluate(with_crops, default_scores(pairs, len(queries), len(db), policy),
                                           queries, policy["pdq_max"], 128)
            speeds[with_crops] = images_per_second(store_fn, sample)
            pairs = {k: v[~np.char.startswith(pairs["s_region"].astype(str), "crop:")]
                     for k, v in pairs.items()}
            best = default_scores(pairs, len(queries), len(db), policy)
            default_t = policy["pdq_max"]
            stored_rows = [int((~np.char.startswith(h["region"].astype(str), "crop:")).sum())
                           for h in store if h is not None]
            extra_needles = [len(h["pdq"]) - 8 for h in qh if h is not None]
            meta_extra.update(rows_per_item=float(np.mean(stored_rows)),
                              extra_needles=float(np.mean(extra_needles)))
            meta_extra["latency"] = latency_ratio(meta_extra["rows_per_item"],
                                                  meta_extra["extra_needles"], args.quick)
            print(f"  stored rows/item: mean {np.mean(stored_rows):.2f}, max {max(stored_rows)}; "
                  f"extra query needles mean {np.mean(extra_needles):.2f}; latency {meta_extra['latency']}")
        else:
            best = best_per_item(store, qh, key, len(db))
        max_t = 128 if key == "pdq" else 32
        results[name] = evaluate(name, best, queries, default_t, max_t)
        r = results[name]
        print(f"{name}: recall {r['recall']:.3f} at t={r['threshold']} (FA {r['false_alarm']:.3f}); "
              f"default t={default_t}: recall {r['recall_default']:.3f} FA {r['false_alarm_default']:.3f}; "
              f"{speeds[name]:.0f} img/s ({time.time() - t0:.0f}s)", flush=True)
    notes = ""
    if "rows_per_item" in meta_extra:
        lat = meta_extra["latency"]
        notes = (f"hashmatch default stores {meta_extra['rows_per_item']:.2f} PDQ codes per item "
                 f"on average ({meta_extra['rows_per_item'] * 32:.0f} bytes; at most 3: full, content, "
                 f"embedded) and queries 8 dihedral needles (against stored full frames) + full + "
                 f"{meta_extra['extra_needles']:.2f} region needles (against every stored row). "
                 f"Exact scan at {lat['items']:,} items, 1 thread: full-frame-only query "
                 f"{lat['baseline_ms']:.1f} ms, hashmatch default {lat['default_ms']:.1f} ms "
                 f"(x{lat['ratio']:.2f}). Decision rule: pair distance (+{regions.REGION_PENALTY['embedded']} "
                 f"for pairs involving an embedded region), best item only, and only if {regions.PDQ_MARGIN} "
                 f"bits closer than the runner-up. PDQ hashed via {PDQ_IMPL}.")
    results = dict(sorted(results.items(), key=lambda kv: kv[0] != "hashmatch default"))
    meta = dict(notes=notes, command="benchmarks/bench_robustness.py" + (" --quick" if args.quick else ""),
                machine=machine(), pdq_impl=PDQ_IMPL, n_db=len(db), n_originals=n_orig,
                n_pos=sum(q.true_item >= 0 for q in queries),
                n_neg=sum(q.true_item < 0 for q in queries))
    (WORK / ("results_quick.json" if args.quick else "results.json")).write_text(json.dumps(results, indent=1))
    write_report(results, speeds, meta, args.quick)
    if not args.quick:
        plot(results, PLOT)
    if "hashmatch default" in results:
        rewrite_ablations(args.quick)
    print(f"done in {time.time() - started:.0f}s")


ABLATIONS = {
    "default (as above)": {},
    "no margin test (every item within threshold)": {"margin": 0},
    "no embedded-region penalty": {"penalty": 0},
    "no embedded regions at all": {"drop_regions": ("embedded",)},
    "no earlier embedded steps (final box only)": {"drop_steps": True},
    "no stored embedded region (store full + content)": {"drop_stored": ("embedded",)},
    "full frame only (+dihedral), margin test": {"drop_regions": ("embedded", "content")},
    "+ grid verification <= 40 of 240 bits": {"grid_max": 40},
    "+ grid verification <= 60": {"grid_max": 60},
    "no minimum quality (0)": {"min_quality": 0},
    "min PDQ quality 80": {"min_quality": 80},
}


def ablation_table(pairs: dict, queries: list[Query], n_items: int) -> list[str]:
    """Recall at <= 1% false alarm of the decision rule with one piece changed, same hashes."""
    lines = ["| hashmatch default variant | recall at <=1% FA | threshold | frame | crop | overlay | plain |",
             "|---|---|---|---|---|---|---|"]
    base_pairs = {k: v[~np.char.startswith(pairs["s_region"].astype(str), "crop:")] for k, v in pairs.items()}
    for label, change in ABLATIONS.items():
        p = base_pairs
        if change.get("drop_steps"):
            keep = ~np.char.startswith(p["q_region"].astype(str), "embedded:")
            p = {k: v[keep] for k, v in p.items()}
        if change.get("drop_stored"):
            keep = ~np.isin(p["s_region"].astype(str), change["drop_stored"])
            p = {k: v[keep] for k, v in p.items()}
        drop = change.get("drop_regions", ())
        if drop:
            q_kind = np.char.partition(p["q_region"].astype(str), ":")[:, 0]
            s_kind = np.char.partition(p["s_region"].astype(str), ":")[:, 0]
            keep = ~np.isin(q_kind, drop) & ~np.isin(s_kind, drop)
            p = {k: v[keep] for k, v in p.items()}
        policy = dict(DEFAULT_POLICY, **{k: v for k, v in change.items() if k in DEFAULT_POLICY})
        penalty = change.get("penalty")
        saved = dict(regions.REGION_PENALTY)
        if penalty is not None:
            regions.REGION_PENALTY.update({k: penalty for k in regions.REGION_PENALTY})
        try:
            r = evaluate(label, default_scores(p, len(queries), n_items, policy), queries,
                         policy["pdq_max"], 128)
        finally:
            regions.REGION_PENALTY.update(saved)
        c = r["per_category"]
        lines.append(f"| {label} | {r['recall']:.3f} | {r['threshold']} | {c['frame']:.2f} | "
                     f"{c['crop']:.2f} | {c['overlay']:.2f} | {c['plain']:.2f} |")
    return lines


def rewrite_ablations(quick: bool) -> None:
    """Re-evaluate the saved candidate pairs and put the ablation table in the section."""
    pairs = dict(np.load(WORK / ("pairs_quick.npz" if quick else "pairs.npz")))
    db, _, queries = build_dataset(quick, list(edits.EDITS))
    table = "\n".join(["", "Ablations (same hashes, decision rule changed):", ""]
                      + ablation_table(pairs, queries, len(db)) + [""])
    if quick:
        print(table)
        return
    text = RESULTS.read_text()
    marker = "![robustness](robustness.png)"
    head, tail = text.split(marker, 1)
    if "Ablations (same hashes" in head:
        head = head[:head.index("\nAblations (same hashes")]
    RESULTS.write_text(head.rstrip() + "\n" + table + "\n" + marker + tail)


def latency_ratio(rows_per_item: float, extra_needles: float, quick: bool) -> dict:
    """Exact-scan time of one query at 1M items: full-frame only (8 dihedral needles over one
    row per item) vs hashmatch default (8 dihedral + region needles over rows_per_item rows)."""
    from hashmatch._hamming import range_search_multi
    items = 200_000 if quick else 1_000_000
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, (int(items * rows_per_item), 32), dtype=np.uint8)
    dihedral = rng.integers(0, 256, (1, 8, 32), dtype=np.uint8)
    extra = rng.integers(0, 256, (1, 1 + max(1, round(extra_needles)), 32), dtype=np.uint8)

    def timed(fn, repeat=5):
        fn()
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        return (time.perf_counter() - start) / repeat * 1000

    base = timed(lambda: range_search_multi(dihedral, rows[:items], 31, threads=1))
    # hashmatch default: the 8 rotations/flips against the stored full frames (one per item),
    # the region needles (full, content, embedded...) against every stored row.
    ours = timed(lambda: (range_search_multi(dihedral, rows[:items], 31, threads=1),
                          range_search_multi(extra, rows, 31, threads=1)))
    return {"items": items, "baseline_ms": base, "default_ms": ours, "ratio": ours / base}


PAIR_RADIUS = 100
SPEED_FN = {"hashmatch default": hm_default_store_lean}
DEFAULT_POLICY = {"min_quality": regions.MIN_QUALITY, "grid_max": 256, "pdq_max": regions.PDQ_MAX_DISTANCE,
                  "margin": regions.PDQ_MARGIN}

if __name__ == "__main__":
    main()
