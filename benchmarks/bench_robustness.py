"""Robustness: recall per edit at <= 1% query false alarm, hashmatch vs PDQ/pHash/dHash peers.

    .venv/bin/python benchmarks/bench_robustness.py --quick      # < 3 min, for development
    nohup .venv/bin/python benchmarks/bench_robustness.py > benchmarks/_work/robustness.log &

Data (written once under benchmarks/_work/robustness, then every system hashes FROM THE FILES):
- originals: public-corpus photos and receipts + synthetic adverts (ID cards from one template,
  chat screenshots, price posters; tests/edits.py);
- database = originals + distractors: the rest of the corpus, many more adverts from the same
  templates (hard negatives), and edited distractors (screenshots/posts/borders of other images);
- queries: every edit of tests/edits.py applied to every original (positives), plus
  negative queries: held-out images, each through a random edit, that are not in the database.

A query's false alarm: any database item other than its source within the threshold. For each
system we sweep the threshold, report recall per edit at the largest threshold whose query
false-alarm rate (over all queries) is <= 1%, and recall / false alarm at the system's default.
Writes the RESULTS.md section between the BENCH_ROBUSTNESS markers and benchmarks/robustness.png.
"""
from __future__ import annotations

import argparse
import dataclasses
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
# edits.py (the synthetic adverts and the re-post edits) lives with the tests, which use it too;
# appended, so the benchmarks folder wins any name both folders have (reliability)
sys.path.append(str(HERE.parent / "tests"))

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

WORKING_SIDE = 512  # the grid system hashes a copy at most this long


def _open(path: str, max_side: int | None = None) -> Image.Image:
    """Decode like hashmatch does; ``max_side``: then shrink (box filter) for region hashing."""
    from hashmatch import decode
    image = decode.decode(path, mode="RGB", draft_min_side=max_side).image
    factor = max(image.size) // max_side if max_side else 1
    return image.reduce(factor) if factor >= 2 else image


def hm_default_store(path: str) -> dict:
    """What the Index stores for a known image (hashing cost only, for images/s)."""
    from hashmatch.hashing import fingerprint_file
    return {"rows": 1 + len(fingerprint_file(path, ("pdq",), regions=True).regions)}


def hashmatch_index_scores(db: list[str], queries: list[Query], workers: int,
                           max_distance: int = 128, variants=(),
                           region_config: regions.RegionConfig = regions.DEFAULT_REGION_CONFIG):
    """The real thing: a hashmatch Index of ``db`` (regions on, the defaults), queried with
    every query file through ``Index.query_many``. Returns one (n_queries, n_items) matrix of
    matched items' scores (NO_MATCH elsewhere) for the defaults at ``max_distance`` (the
    threshold sweep), one for the defaults as shipped (default radius: the figures "at
    default"), and one per dict of query options in ``variants``, and stats. Cutting the
    sweep at t approximates querying at t: the decision rule is exact under a cut
    (regions.select_matches) and the prefilter does not depend on the radius
    (shard.PREFILTER_THRESHOLD), but which items are aligned does (the closest within the
    radius: regions.ALIGN_WINDOW), hence the separate query at the default radius.
    ``region_config``: the Index's (``--set``)."""
    import tempfile
    from hashmatch.index import Index, query_fingerprints
    qpaths = [q.path for q in queries]
    with tempfile.TemporaryDirectory() as tmp, \
            Index.open(os.path.join(tmp, "bench.hmdb"), create=True,
                       region_config=region_config) as index:
        report = index.add_files(db, workers=workers)
        if report.failed:
            print(f"  {len(report.failed)} database files failed: {report.failed[0].reason}",
                  file=sys.stderr)
        item_of = {o.item_id: i for i, o in enumerate(report.outcomes) if o.item_id is not None}
        rows = index.stats()["in_memory"]["pdq/256"]["fingerprints"]
        role_share = role_mix(index, len(db))
        matrices = []
        for options in [{}, {"max_distance": None}] + list(variants):
            options = {"max_distance": max_distance, **options}
            best = np.full((len(queries), len(db)), NO_MATCH, dtype=np.int32)
            for qi, result in enumerate(index.query_many(qpaths, workers=workers, **options)):
                if result.error:
                    print(f"  query failed {result.path}: {result.error}", file=sys.stderr)
                for match in result.matches:
                    best[qi, item_of[match.item_id]] = match.score
            matrices.append(best)
    sample = qpaths[:: max(1, len(qpaths) // 200)]
    region_needles = np.mean([sum(1 for _, region, _ in query_fingerprints(
        p, ("pdq",), False, True, True, region_config)[0] if region != "full") for p in sample])
    return matrices, {"rows_per_item": rows / len(db), "region_needles": float(region_needles),
                      "role_share": role_share}


def grid_full_store(path: str) -> dict:
    return {"pdq": grid_codes(_open(path, WORKING_SIDE))}


def grid_full_query(path: str) -> dict:
    return {"pdq": grid_codes(_open(path, WORKING_SIDE), dihedral=True)}


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
    "hashmatch default": (hm_default_store, None, "pdq", None),
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


def images_per_second(fns: dict, paths: list[str], rounds: int = 3) -> dict:
    """Images/s of each store function, 1 process, files from disk (page cache warm): each
    round hashes a fresh share of ``paths`` with every system in turn, in an order rotated
    each round, timing process time -- the systems are measured side by side, so a busy
    spell of the shared machine does not fall on one of them only."""
    names = list(fns)
    seconds = dict.fromkeys(names, 0.0)
    files = 0
    for r in range(rounds):
        share = paths[r::rounds]
        files += len(share)
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.process_time()
            for path in share:
                fns[name](path)
            seconds[name] += time.process_time() - start
    return {name: files / max(seconds[name], 1e-9) for name in names}


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


def evaluate(name, best, queries, default_t, max_t, best_default=None):
    """Recall at <= 1 % false alarm from the sweep ``best``; the figures at the default
    threshold from ``best_default`` (a query at the default radius) if given."""
    d_true, d_wrong = true_and_wrong(best, queries)
    d_true_default, d_wrong_default = (d_true, d_wrong) if best_default is None else \
        true_and_wrong(best_default, queries)
    is_pos = np.array([q.true_item >= 0 for q in queries])
    t = operating_point(d_true, d_wrong, is_pos, max_t)
    edits_ = sorted({q.edit for q in queries if q.true_item >= 0}, key=list(edits.EDITS).index)
    edit_of = np.array([q.edit for q in queries])
    result = {"threshold": t, "default": default_t, "per_edit": {}, "per_edit_default": {}}
    for e in edits_:
        sel = edit_of == e
        result["per_edit"][e] = float((d_true[sel] <= t).mean())
        result["per_edit_default"][e] = float((d_true_default[sel] <= default_t).mean())
    result["recall"] = float((d_true[is_pos] <= t).mean())
    result["false_alarm"] = float((d_wrong <= t).mean())
    result["recall_default"] = float((d_true_default[is_pos] <= default_t).mean())
    result["false_alarm_default"] = float((d_wrong_default <= default_t).mean())
    result["neg_false_alarm_default"] = float((d_wrong_default[~is_pos] <= default_t).mean())
    cats = np.array([q.category for q in queries])
    result["per_category"] = {c: float((d_true[(cats == c)] <= t).mean())
                              for c in edits.CATEGORY_TARGETS if (cats == c).any()}
    # The targets cover crops of 5-15 % and rotations of +-3 degrees; crop_20 and
    # rotate_5 are harder edits kept in the suite (and in "recall") to show the slope.
    in_range = is_pos & np.isin(cats, [c for c, t in edits.CATEGORY_TARGETS.items() if t])
    result["recall_in_range"] = float((d_true[in_range] <= t).mean())
    result["recall_default_in_range"] = float((d_true_default[in_range] <= default_t).mean())
    result["per_category_default"] = {c: float((d_true_default[(cats == c)] <= default_t).mean())
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
    lines.append("| overall, edits within the issue's ranges (without crop_20, rotate_5) | " + " | ".join(
        f"{results[s]['recall_in_range']:.3f}" for s in systems) + " |")
    lines.append("| threshold at 1% FA | " + " | ".join(str(results[s]['threshold']) for s in systems) + " |")
    lines.append("| false alarm there | " + " | ".join(f"{results[s]['false_alarm']:.3f}" for s in systems) + " |")
    lines.append("| default threshold | " + " | ".join(str(results[s]['default']) for s in systems) + " |")
    lines.append("| recall at default | " + " | ".join(f"{results[s]['recall_default']:.3f}" for s in systems) + " |")
    lines.append("| recall at default, within the issue's ranges | " + " | ".join(
        f"{results[s]['recall_default_in_range']:.3f}" for s in systems) + " |")
    lines.append("| FA at default (all / negative queries) | " + " | ".join(
        f"{results[s]['false_alarm_default']:.3f} / {results[s]['neg_false_alarm_default']:.3f}" for s in systems) + " |")
    lines.append("| images/s (index side, 1 process, systems interleaved, process time) | "
                 + " | ".join(f"{speeds[s]:.0f}" for s in systems) + " |")
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


def region_config_of(assignments: list[str], parser) -> regions.RegionConfig:
    """The RegionConfig of ``--set regions.NAME=VALUE`` assignments (VALUE in JSON: true,
    false); an unknown NAME or a value that is not a JSON boolean is a usage error."""
    fields = {field.name for field in dataclasses.fields(regions.RegionConfig)}
    changes = {}
    for assignment in assignments:
        name, _, value = assignment.partition("=")
        module, _, attr = name.partition(".")
        attr = attr.lower()  # regions.ALIGN, as the module switch was spelled, still reads
        if module != "regions" or attr not in fields:
            parser.error(f"--set {assignment}: not regions.NAME=VALUE with NAME one of "
                         f"{', '.join(sorted(fields))}")
        try:
            changes[attr] = json.loads(value)
        except json.JSONDecodeError:
            changes[attr] = None
        if not isinstance(changes[attr], bool):
            parser.error(f"--set {assignment}: the value is true or false")
        print(f"experiment: regions.{attr} = {changes[attr]!r}")
    return dataclasses.replace(regions.DEFAULT_REGION_CONFIG, **changes)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--no-ablations", action="store_true")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the query-latency figures at 1M items (RESULTS.md is not "
                             "touched): the database's role mix, then latency_ratio")
    parser.add_argument("--set", action="append", default=[], metavar="regions.NAME=VALUE",
                        help="experiment: switch a step of the region pipeline (a field of "
                             "hashmatch.regions.RegionConfig, e.g. regions.align=false); the "
                             "Index hands it to its worker processes")
    args = parser.parse_args(argv)
    args.region_config = region_config_of(args.set, parser)
    started = time.time()
    edit_names = list(edits.EDITS)
    db, n_orig, queries = build_dataset(args.quick, edit_names)
    print(f"dataset: {len(db)} db items, {len(queries)} queries ({time.time() - started:.0f}s)", flush=True)
    qpaths = [q.path for q in queries]
    if args.latency_only:
        print_latency(db, queries, args)
        return
    results, speeds, meta_extra, ablations = {}, {}, {}, []
    sample = db[:: max(1, len(db) // (60 if args.quick else 200))]
    for name in args.systems.split(","):
        store_fn, query_fn, key, default_t = SYSTEMS[name]
        t0 = time.time()
        if query_fn is not None:
            store = hash_all(store_fn, db, args.workers)
            qh = hash_all(query_fn, qpaths, args.workers)
        if name == "hashmatch default":
            variants = {} if args.no_ablations else ABLATIONS
            scores, stats = hashmatch_index_scores(db, queries, args.workers,
                                                   variants=list(variants.values()),
                                                   region_config=args.region_config)
            best, best_default = scores[0], scores[1]
            np.save(WORK / ("index_scores_quick.npy" if args.quick else "index_scores.npy"), best)
            default_t = regions.PDQ_MAX_DISTANCE
            meta_extra.update(stats)
            meta_extra["latency"] = latency_of_queries(stats["role_share"], queries, args.quick)
            for (label, _), variant_best in zip(variants.items(), scores[2:]):
                ablations.append((label, evaluate(label, variant_best, queries, default_t, 128)))
        else:
            best = best_default = best_per_item(store, qh, key, len(db))
        max_t = 128 if key == "pdq" else 32
        results[name] = evaluate(name, best, queries, default_t, max_t, best_default)
        r = results[name]
        print(f"{name}: recall {r['recall']:.3f} at t={r['threshold']} (FA {r['false_alarm']:.3f}); "
              f"default t={default_t}: recall {r['recall_default']:.3f} FA {r['false_alarm_default']:.3f} "
              f"({time.time() - t0:.0f}s)", flush=True)
        print("  per category at <=1% FA: " + ", ".join(f"{c} {v:.3f}" for c, v in r["per_category"].items()))
        print("  per category at default: " + ", ".join(f"{c} {v:.3f}" for c, v in r["per_category_default"].items()))
    speeds = images_per_second({name: SYSTEMS[name][0] for name in results}, sample)
    print("images/s (index side, 1 process, interleaved, process time): " + ", ".join(
        f"{name} {speed:.0f}" for name, speed in speeds.items()), flush=True)
    notes = ""
    if "rows_per_item" in meta_extra:
        lat = meta_extra["latency"]
        notes = (f"hashmatch default = a real `hashmatch.Index` (regions on, default decision rule), "
                 f"`add_files` of the database then `query_many` of every query file. It stores "
                 f"{meta_extra['rows_per_item']:.2f} PDQ codes per item on average "
                 f"({meta_extra['rows_per_item'] * 32:.0f} bytes of codes) and queries 8 rotations/"
                 f"flips of the full frame (against stored full frames) + "
                 f"{meta_extra['region_needles']:.2f} region needles on average (against the "
                 f"stored roles `regions.search_roles` names). Search time of one query at "
                 f"{lat['items']:,} items "
                 f"({lat['rows']:,} stored rows, {lat['needles']} needles of a real post query, "
                 f"1 thread, `hashmatch.search.search_shard`): hashmatch default "
                 f"{lat['default_ms']:.1f} ms; full frames only {lat['full_wide_ms']:.1f} ms at the "
                 f"same radius {lat['radius']} (x{lat['ratio_wide']:.1f}) and {lat['full31_ms']:.2f} ms "
                 f"at PDQ's radius 31 with MIH tables (x{lat['ratio_31']:.0f}); with 5 % of the "
                 f"items' codes 90-115 bits from the query's (clustered): "
                 f"{lat['clustered_default_ms']:.1f} ms vs {lat['clustered_full_wide_ms']:.1f} ms "
                 f"(x{lat['clustered_ratio_wide']:.1f}) and {lat['clustered_full31_ms']:.2f} ms "
                 f"(x{lat['clustered_ratio_31']:.0f}); one query per edit "
                 f"({lat.get('sample_queries', 0)} queries, median "
                 f"{lat.get('sample_needles', 0):.0f} needles), median of their ratios: "
                 f"x{lat.get('sample_ratio_wide', float('nan')):.1f} the full-frame scan, "
                 f"x{lat.get('sample_ratio_31', float('nan')):.0f} the radius-31 query "
                 f"({lat.get('sample_default_ms', float('nan')):.1f} ms vs "
                 f"{lat.get('sample_full_wide_ms', float('nan')):.1f} ms); medians of 7 "
                 f"interleaved rounds, load {lat['load']}. Decision rule (hashmatch.regions.select_matches): pair "
                 f"distance + {regions.REGION_PENALTY['embedded']} for pairs involving an embedded "
                 f"region; an item matches within the threshold if its score is <= "
                 f"{regions.PDQ_CERTAIN} or it is {regions.PDQ_MARGIN} bits closer than any other "
                 f"stored picture. PDQ hashed via {PDQ_IMPL}.")
    results = dict(sorted(results.items(), key=lambda kv: kv[0] != "hashmatch default"))
    meta = dict(notes=notes, command="benchmarks/bench_robustness.py" + (" --quick" if args.quick else ""),
                machine=machine(), pdq_impl=PDQ_IMPL, n_db=len(db), n_originals=n_orig,
                n_pos=sum(q.true_item >= 0 for q in queries),
                n_neg=sum(q.true_item < 0 for q in queries))
    (WORK / ("results_quick.json" if args.quick else "results.json")).write_text(json.dumps(results, indent=1))
    if "hashmatch default" in results:
        meta["notes"] += "\n" + "\n".join(ablation_table(results["hashmatch default"], ablations))
    write_report(results, speeds, meta, args.quick)
    if not args.quick:
        plot(results, PLOT)
    print(f"done in {time.time() - started:.0f}s")


# Query options of hashmatch default changed one at a time, same index and query files.
ABLATIONS = {
    # The 64 best items per query: without the margin test every item within 128 bits is a
    # match (14M Match objects, 13 GB, on the full suite); a true item outside the 64 best
    # could only count at a threshold where 64 wrong items match too.
    "no margin test (every item within threshold)": {"margin": 0, "top_k": 64},
    "no minimum quality (0)": {"min_quality": 0},
    # Whole-image queries default to no margin test (margin 0): as for the first row, the
    # 64 best items keep the run's memory bounded.
    "full frame only (+ rotations/flips), no margin test": {"regions": False, "top_k": 64},
}


def ablation_table(default: dict, ablations: list) -> list[str]:
    lines = ["", "Ablations (same index, one query option changed):", "",
             "| hashmatch default variant | recall at <=1% FA | threshold | frame | crop | overlay | plain |",
             "|---|---|---|---|---|---|---|"]
    for label, r in [("default (as above)", default)] + ablations:
        c = r["per_category"]
        lines.append(f"| {label} | {r['recall']:.3f} | {r['threshold']} | {c['frame']:.2f} | "
                     f"{c['crop']:.2f} | {c['overlay']:.2f} | {c['plain']:.2f} |")
    return lines


def _flip_bits(codes: np.ndarray, counts: np.ndarray, rng) -> np.ndarray:
    """Each row with ``counts[i]`` distinct random bits flipped."""
    out = codes.copy()
    for lo in range(0, len(codes), 50_000):
        r = rng.random((min(50_000, len(codes) - lo), codes.shape[1] * 8))
        order = np.argsort(r, axis=1)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(r.shape[1])[None, :], axis=1)
        flips = ranks < counts[lo:lo + len(r), None]
        out[lo:lo + len(r)] ^= np.packbits(flips, axis=1, bitorder="little")
    return out


def latency_of_queries(role_share: dict, queries, quick: bool) -> dict:
    """latency_ratio of the first post query (clustered mix around it) and of one query
    per edit; printed."""
    post_query = next(q.path for q in queries if q.edit == "post")
    one_per_edit = list({q.edit: q.path for q in reversed(queries) if q.true_item >= 0}.values())
    latency = latency_ratio(role_share, post_query, quick, more_queries=one_per_edit)
    print("  latency: " + ", ".join(f"{k} {round(v, 2) if isinstance(v, float) else v}"
                                    for k, v in latency.items()), flush=True)
    return latency


def role_mix(index, items: int) -> dict:
    """Stored region and crop-window rows per item of an Index's PDQ codes."""
    shard = index._shards[("pdq", 256)]
    roles = shard.roles_of(np.nonzero(shard.live[:shard.n])[0])
    return {role: float((roles == role).sum()) / items for role in ("region", "crop")}


def print_latency(db, queries, args) -> None:
    """--latency-only: the role mix of an Index of the database, then the latency figures."""
    import tempfile
    from hashmatch.index import Index
    with tempfile.TemporaryDirectory() as tmp, \
            Index.open(os.path.join(tmp, "bench.hmdb"), create=True,
                       region_config=args.region_config) as index:
        index.add_files(db, workers=args.workers)
        role_share = role_mix(index, len(db))
    print(f"role mix per item: {role_share}", flush=True)
    latency_of_queries(role_share, queries, args.quick)


def latency_mixes(role_share: dict, needles, items: int, near_share: float = 0.05,
                  near_bits=(90, 115)):
    """Stored codes for the latency figures: rows of ``items`` items in the measured role
    mix, in item order (an index adds an item's rows together). Two mixes: "random" (every
    code random) and "clustered": ``near_share`` of the items lie near the query, their full
    frame ``near_bits`` from the query's full frame, their regions that far from its content
    region and their crop windows that far from its full frame (real PDQ codes cluster: on
    the benchmark database 4.4 % of item pairs are within 100 bits), so that a search that is
    only fast because random codes give it nothing to check is caught.
    Returns {mix: (item_ids, region names, codes)}."""
    rng = np.random.default_rng(0)
    names = {"full": "full", "region": "content", "crop": "crop:l12"}
    per_role = {"full": items}
    per_role.update({role: int(round(items * share)) for role, share in role_share.items()})
    region_names = np.concatenate([np.full(n, names[role], object) for role, n in per_role.items()])
    item_ids = np.concatenate([np.arange(n) % items for n in per_role.values()])
    order = np.argsort(item_ids, kind="stable")
    region_names, item_ids = region_names[order], item_ids[order]
    codes = rng.integers(0, 256, (len(item_ids), 32), dtype=np.uint8)
    anchor_of = {name: fp.bits for fp, name, variant in needles if variant == "original"}
    full = anchor_of["full"]
    anchors = {"full": full, "content": anchor_of.get("content", full), "crop:l12": full}
    near = rng.random(items) < near_share
    clustered = codes.copy()
    for name, anchor in anchors.items():
        rows = np.nonzero(near[item_ids] & (region_names == name))[0]
        counts = rng.integers(near_bits[0], near_bits[1] + 1, len(rows))
        clustered[rows] = _flip_bits(np.broadcast_to(anchor, (len(rows), 32)), counts, rng)
    return {"random": (item_ids, region_names, codes),
            "clustered": (item_ids, region_names, clustered)}


def latency_ratio(role_share: dict, sample_query: str, quick: bool, repeat: int = 7,
                  more_queries=()) -> dict:
    """Search time of one query at 1M items through the Index's own search
    (``hashmatch.search.search_shard``, 1 thread, the needles of a real query): hashmatch
    default vs full frames only, the latter both at PDQ's usual radius 31 (what a
    full-frame-only index answers; MIH tables) and at the default's radius (a scan, like
    the default). Stored codes: random, and clustered around the query (latency_mixes).
    Medians of ``repeat`` rounds, the searches interleaved within a round.
    ``more_queries``: further query files (e.g. one per edit), timed the same way on the
    random codes: "sample_*" is the median over them of each query's ratio (a post
    screenshot, the sample query, has more needles than most queries)."""
    from hashmatch import regions as rg
    from hashmatch.needles import query_fingerprints
    from hashmatch.search import search_shard
    from hashmatch.shard import Shard
    items = 200_000 if quick else 1_000_000
    needles = query_fingerprints(sample_query, ("pdq",), False, True, True)[0]

    def shard(item_ids, region_names, codes):
        out = Shard("pdq", 256)
        n = len(item_ids)
        out.append(np.arange(n), item_ids, codes, region_names, np.full(n, "original", object),
                   np.full(n, 100))
        for part in out.codes.parts.values():
            part.threads = 1
        return out

    def searches_of(query_needles, default, full_only):
        full_needles = [needle for needle in query_needles if needle[1] == "full"]
        return {
            "full31": lambda: search_shard(full_only, "pdq", full_needles, 31, None, 0, False),
            "full_wide": lambda: search_shard(full_only, "pdq", full_needles, None, None, None,
                                              True),
            "default": lambda: search_shard(default, "pdq", query_needles, None, None, None,
                                            True),
        }

    searches, shards = {}, {}
    for mix, (item_ids, region_names, codes) in latency_mixes(role_share, needles, items).items():
        full = region_names == "full"
        shards[mix] = (shard(item_ids, region_names, codes),
                       shard(item_ids[full], region_names[full], codes[full]))
        searches[mix] = searches_of(needles, *shards[mix])
        n_rows = len(item_ids)
    sample_needles = []
    for path in more_queries:
        query_needles = query_fingerprints(path, ("pdq",), False, True, True)[0]
        sample_needles.append(len(query_needles))
        searches[f"sample{len(sample_needles)}"] = searches_of(query_needles, *shards["random"])
    times = {(mix, name): [] for mix, fns in searches.items() for name in fns}
    for fns in searches.values():
        for fn in fns.values():
            fn()  # warm-up
    for _ in range(repeat):
        for mix, fns in searches.items():
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[mix, name].append(time.perf_counter() - start)
    ms = {key: float(np.median(values)) * 1000 for key, values in times.items()}
    out = {"items": items, "rows": n_rows, "needles": len(needles),
           "radius": rg.PDQ_MAX_DISTANCE + rg.PDQ_MARGIN, "load": round(os.getloadavg()[0], 2)}
    for mix in ("random", "clustered"):
        prefix = "" if mix == "random" else mix + "_"
        out.update({
            prefix + "full31_ms": ms[mix, "full31"], prefix + "full_wide_ms": ms[mix, "full_wide"],
            prefix + "default_ms": ms[mix, "default"],
            prefix + "ratio_wide": ms[mix, "default"] / ms[mix, "full_wide"],
            prefix + "ratio_31": ms[mix, "default"] / ms[mix, "full31"]})
    samples = [mix for mix in searches if mix.startswith("sample")]
    if samples:
        out.update({
            "sample_queries": len(samples),
            "sample_needles": float(np.median(sample_needles)),
            "sample_default_ms": float(np.median([ms[m, "default"] for m in samples])),
            "sample_full_wide_ms": float(np.median([ms[m, "full_wide"] for m in samples])),
            "sample_ratio_wide": float(np.median([ms[m, "default"] / ms[m, "full_wide"]
                                                  for m in samples])),
            "sample_ratio_31": float(np.median([ms[m, "default"] / ms[m, "full31"]
                                                for m in samples]))})
    return out


if __name__ == "__main__":
    main()
