"""Precision: does an image the database does not know match nothing, at any database size?
And do true copies still match, through edits the project's own suite has and some it has not?

    .venv/bin/python benchmarks/bench_precision.py --quick     # ~5 min
    .venv/bin/python benchmarks/bench_precision.py             # the RESULTS.md figures

Known items (the database's own pictures): corpus photos and receipts and synthetic adverts
(ID cards of one design, chat screenshots, price posters; tests/edits.py). Database
sizes: the known items alone (80), then + real distractors (more corpus images and adverts
of the same templates) to ~4,000, then + hash-list padding (PDQ codes of those distractors
with 40-70 random bits flipped: plausible hashes without pixels, which the plain-PDQ rule
judges) to 100,000 and 1,000,000.

Negative queries: unknown photos, unknown receipts and NEW adverts of the known templates
(same-template siblings), each as is and through 7 edits (re-encode, crop, border, social
post, phone screenshot, meme, mirror). A false alarm: the default query returns anything.
Positive queries: every known item through the robustness suite's edits plus edits that
suite does not have (crops of 5-25 % off any combination of sides, captions across the
picture, big stickers, other post widths, small turns): recall = the known item is returned
as a verified copy. Peers in the same run, on the same files: pdqhash PDQ at 31, as is and
with its 8 rotations/flips (the full frame only, as python-threatexchange matches).
Writes the RESULTS.md section between the BENCH_PRECISION markers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
# edits.py (the synthetic adverts and the re-post edits) lives with the tests, which use it too;
# appended, so the benchmarks folder wins any name both folders have (reliability)
sys.path.append(str(HERE.parent / "tests"))

import edits  # noqa: E402

import hashmatch as hm  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data" / "public-corpus"
WORK = HERE / "_work" / "precision"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- BENCH_PRECISION:BEGIN -->", "<!-- BENCH_PRECISION:END -->"
NEGATIVE_EDITS = ["jpeg_q30_60", "crop_10", "border_white", "post", "phone_screenshot", "meme",
                  "mirror"]


# --- edits the robustness suite does not have (drawn from their own rng; not tuned) ---------

def _crop_any(lo, hi):
    def edit(im, rng):
        total = rng.uniform(lo, hi)
        sides = rng.choice(4, int(rng.integers(1, 4)), replace=False)
        fractions = [0.0] * 4
        shares = rng.dirichlet(np.ones(len(sides)))
        for side, share in zip(sides, shares):
            fractions[side] = total * share
        return edits.jpeg(edits.crop_sides(im, fractions), int(rng.integers(70, 92)))
    return edit


def _crop_adjacent(im, rng):
    a = int(rng.integers(4))
    fractions = [0.0] * 4
    fractions[a] = fractions[(a + 1) % 4] = rng.uniform(0.12, 0.16)
    return edits.jpeg(edits.crop_sides(im, fractions), 85)


def _caption_inside(im, rng):
    out = im.copy()
    w, h = out.size
    band = round(h * rng.uniform(0.1, 0.18))
    y0 = int(rng.integers(0, h - band))
    draw = ImageDraw.Draw(out)
    draw.rectangle([0, y0, w, y0 + band], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    text = "TRUSTED " + edits._phone(rng)
    draw.text((w / 2, y0 + band / 2), text, fill=(255, 255, 255), anchor="mm",
              font=edits._fit_text(draw, text, w * 0.9, int(band * 0.6)))
    return edits.jpeg(out, 85)


def _big_sticker(im, rng):
    out = im.copy()
    w, h = out.size
    side = (rng.uniform(0.25, 0.4) * w, rng.uniform(0.25, 0.4) * h)  # ~6-16 % of the area
    x0, y0 = rng.uniform(0, w - side[0]), rng.uniform(0, h - side[1])
    draw = ImageDraw.Draw(out)
    draw.rounded_rectangle([x0, y0, x0 + side[0], y0 + side[1]], radius=12,
                           fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw.text((x0 + side[0] / 2, y0 + side[1] / 2), "SOLD", anchor="mm", fill=(0, 0, 0),
              font=edits.font(max(12, int(side[1] * 0.3)), True))
    return edits.jpeg(out, 85)


def _narrow_post(im, rng):
    return edits.jpeg(edits.render_post(im, rng, width=int(rng.integers(480, 720)))[0], 80)


def _turn(degrees):
    return lambda im, rng: edits.jpeg(edits.rotate_small(
        im, rng.choice([-1, 1]) * rng.uniform(degrees - 0.5, degrees + 0.5), rng), 85)


HELD_OUT_EDITS = {
    "crop_any_5_15": ("crop", _crop_any(0.05, 0.15)),
    "crop_any_15_25": ("crop", _crop_any(0.15, 0.25)),
    "crop_adjacent_15": ("crop", _crop_adjacent),
    "caption_inside": ("overlay", _caption_inside),
    "big_sticker": ("overlay", _big_sticker),
    "narrow_post": ("frame", _narrow_post),
    "turn_3": ("rotate", _turn(3.0)),
}
OWN_EDITS = ["jpeg_q30_60", "resize_down", "colour", "border_white", "letterbox", "meme", "post",
             "phone_screenshot", "post_in_phone", "crop_5", "crop_10", "crop_15", "rot90_180_270",
             "mirror", "rotate_3", "banner", "sticker", "watermark", "meme_mirror"]


def apply(name: str, image: Image.Image, seed: int) -> Image.Image:
    if name in HELD_OUT_EDITS:
        rng = np.random.default_rng(edits.seed_of("held-out", name, seed))
        return HELD_OUT_EDITS[name][1](image.convert("RGB"), rng)
    return edits.apply_edit(name, image, seed)


def category(name: str) -> str:
    return HELD_OUT_EDITS[name][0] if name in HELD_OUT_EDITS else edits.EDITS[name][0]


# --- data -----------------------------------------------------------------------------------

def _save(image: Image.Image, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        image.convert("RGB").save(path, quality=92)
    return str(path)


def build(quick: bool):
    photos = sorted((DATA / "photos").glob("*.jpg"))
    receipts = sorted((DATA / "receipts").glob("*.jpg"))
    rng = np.random.default_rng(20261203)
    photos = [photos[i] for i in rng.permutation(len(photos))]
    receipts = [receipts[i] for i in rng.permutation(len(receipts))]
    portraits = [Image.open(p).convert("RGB").reduce(2) for p in photos[:120]]
    n_known = dict(photos=30, receipts=10, ads=40)
    known = [str(p) for p in photos[:30] + receipts[:10]]
    kinds = ("id", "chat", "poster")

    def adverts(start, count, folder):
        out = []
        for i in range(start, start + count):
            kind = kinds[i % 3]
            path = WORK / folder / f"{kind}_{i:06d}.jpg"
            if not path.exists():
                _save(edits.make_advert(kind, i, portraits), path)
            out.append(str(path))
        return out

    known += adverts(0, n_known["ads"], "known")
    n_neg = dict(photos=20, receipts=10, ads=30) if quick else dict(photos=50, receipts=30,
                                                                    ads=60)
    unknown = ([("photo", str(p)) for p in photos[-n_neg["photos"]:]]
               + [("receipt", str(p)) for p in receipts[-n_neg["receipts"]:]]
               + [(Path(p).stem.split("_")[0], p) for p in adverts(800_000, n_neg["ads"],
                                                                  "unknown")])
    distractors = [str(p) for p in photos[30:len(photos) - n_neg["photos"]]]
    distractors += [str(p) for p in receipts[10:len(receipts) - n_neg["receipts"]]]
    distractors += adverts(100_000, 400 if quick else 3_560, "distractors")
    negatives = []
    for kind, path in unknown:
        negatives.append((kind, "as is", path))
        src = Image.open(path).convert("RGB")
        # Named and seeded by the source picture, not by its place in the list: the quick
        # and the full suite list other pictures, and share this folder.
        stem = Path(path).stem
        for name in NEGATIVE_EDITS:
            out = WORK / "negatives" / f"{stem}_{name}.jpg"
            if not out.exists():
                _save(apply(name, src, edits.seed_of("negative", stem)), out)
            negatives.append((kind, name, str(out)))
    edit_names = OWN_EDITS + list(HELD_OUT_EDITS)
    if quick:
        edit_names = edit_names[::2]
    positives = []
    for item, path in enumerate(known):
        src = Image.open(path).convert("RGB")
        for name in edit_names:
            out = WORK / "positives" / name / f"{item:04d}.jpg"
            if not out.exists():
                _save(apply(name, src, item), out)
            positives.append((item, name, str(out)))
    return known, distractors, negatives, positives


# --- systems --------------------------------------------------------------------------------

def pdqhash_codes(path: str, dihedral: bool) -> np.ndarray:
    import pdqhash

    arr = np.asarray(Image.open(path).convert("RGB"))
    if dihedral:
        bits, _ = pdqhash.compute_dihedral(arr)
        return np.packbits(np.asarray(bits, np.uint8), axis=1)
    bits, _ = pdqhash.compute(arr)
    return np.packbits(np.asarray(bits, np.uint8))[None, :]


def peer_answers(db_paths, queries, dihedral: bool) -> list[set]:
    from hashmatch._hamming import distance_matrix

    db = np.concatenate([pdqhash_codes(p, False) for p in db_paths])
    out = []
    for path in queries:
        d = distance_matrix(pdqhash_codes(path, dihedral), db, threads=1).min(axis=0)
        out.append(set(np.nonzero(d <= 31)[0].tolist()))
    return out


def padding_codes(index, count: int, seed: int) -> np.ndarray:
    """Hash-list padding: stored full frames with 40-70 of their bits flipped."""
    rows = index.fingerprint_rows("pdq")
    full = rows.codes[np.asarray(rows.regions == "full")]
    rng = np.random.default_rng(seed)
    picked = full[rng.integers(0, len(full), count)]
    bits = np.unpackbits(picked, axis=1)
    for row in bits:
        row[rng.choice(256, int(rng.integers(40, 71)), replace=False)] ^= 1
    return np.packbits(bits, axis=1)


def run(quick: bool, sizes: list[int], workers: int) -> dict:
    known, distractors, negatives, positives = build(quick)
    out = {"sizes": {}, "machine": os.uname().machine, "quick": quick}
    with tempfile.TemporaryDirectory() as tmp, \
            hm.Index.open(os.path.join(tmp, "p.hmdb"), create=True) as index:
        report = index.add_files(known, workers=workers)
        item_of = {o.item_id: k for k, o in enumerate(report.outcomes)}
        stored = len(known)
        for size in sizes:
            if size > stored and stored < len(known) + len(distractors):
                take = distractors[: max(0, min(size, len(known) + len(distractors)) - stored)]
                distractors = distractors[len(take):]
                index.add_files(take, workers=workers)
                stored += len(take)
            if size > stored:
                codes = padding_codes(index, size - stored, size)
                for start in range(0, len(codes), 100_000):
                    index.add_hashes(codes[start:start + 100_000], meta={"padding": True})
                stored = size
            label = f"{size:,}"
            print(f"database of {label} items", file=sys.stderr, flush=True)
            out["sizes"][label] = measure(index, item_of, negatives, positives, workers)
        out["peers"] = {
            name: peer_scores(known, negatives, positives, dihedral)
            for name, dihedral in (("pdqhash PDQ <= 31", False),
                                   ("pdqhash PDQ <= 31, 8 rotations", True))}
    return out


def measure(index, item_of, negatives, positives, workers) -> dict:
    neg_paths = [p for _, _, p in negatives]
    started = time.perf_counter()
    neg_results = index.query_many(neg_paths, workers=workers)
    neg_time = time.perf_counter() - started
    false_alarm, by_kind, same_as_copy = [], {}, 0
    for (kind, edit, _), result in zip(negatives, neg_results):
        alarm = bool(result.matches)
        false_alarm.append(alarm)
        by_kind.setdefault(kind, []).append(alarm)
    leads = index.query_many([p for k, _, p in negatives if k in ("id", "chat", "poster")],
                             workers=workers, templates=True)
    same_as_copy = sum(any(m.kind == "copy" for m in r.matches) for r in leads)
    pos_results = index.query_many([p for _, _, p in positives], workers=workers)
    by_edit, by_category = {}, {}
    for (item, edit, _), result in zip(positives, pos_results):
        hit = any(item_of.get(m.item_id) == item and m.kind == "copy" for m in result.matches)
        by_edit.setdefault(edit, []).append(hit)
        by_category.setdefault(category(edit), []).append(hit)
    sample = [p for _, _, p in positives[::max(1, len(positives) // 60)]]
    latencies = []
    for path in sample:
        t = time.perf_counter()
        index.query(path)
        latencies.append(time.perf_counter() - t)
    return {
        "false_alarm": float(np.mean(false_alarm)),
        "false_alarm_by_kind": {k: float(np.mean(v)) for k, v in by_kind.items()},
        "template_sibling_reported_as_copy": same_as_copy,
        "negatives": len(negatives),
        "recall": float(np.mean([h for v in by_edit.values() for h in v])),
        "recall_by_category": {k: float(np.mean(v)) for k, v in by_category.items()},
        "recall_by_edit": {k: float(np.mean(v)) for k, v in by_edit.items()},
        "query_ms_median": float(np.median(latencies) * 1000),
        "negative_queries_per_s": len(neg_paths) / neg_time,
    }


def peer_scores(known, negatives, positives, dihedral) -> dict:
    neg = peer_answers(known, [p for _, _, p in negatives], dihedral)
    pos = peer_answers(known, [p for _, _, p in positives], dihedral)
    by_category = {}
    for (item, edit, _), found in zip(positives, pos):
        by_category.setdefault(category(edit), []).append(item in found)
    return {"false_alarm_80": float(np.mean([bool(f) for f in neg])),
            "recall_80": float(np.mean([item in f for (item, _, _), f in zip(positives, pos)])),
            "recall_by_category_80": {k: float(np.mean(v)) for k, v in by_category.items()}}


def table(results: dict) -> str:
    lines = [f"Machine: {results['machine']} (2-vCPU shared VM); "
             f"{'quick' if results['quick'] else 'full'} run of benchmarks/bench_precision.py.",
             "",
             "| database | unknown images returning any match | ... receipts / photos / ID cards "
             "/ chats / posters | same-template sibling reported as a copy | recall of true "
             "copies | worst category | query median |",
             "|---|---|---|---|---|---|---|"]
    for label, r in results["sizes"].items():
        k = r["false_alarm_by_kind"]
        worst = min(r["recall_by_category"].items(), key=lambda kv: kv[1])
        lines.append(
            f"| {label} | {r['false_alarm']:.3f} of {r['negatives']} | "
            + " / ".join(f"{k.get(x, 0):.3f}" for x in ("receipt", "photo", "id", "chat",
                                                        "poster"))
            + f" | {r['template_sibling_reported_as_copy']} | {r['recall']:.3f} | "
            f"{worst[0]} {worst[1]:.3f} | {r['query_ms_median']:.1f} ms |")
    lines += ["", "Peers (database of the 80 known items, same files):", "",
              "| system | unknown images returning any match | recall |", "|---|---|---|"]
    for name, p in results["peers"].items():
        lines.append(f"| {name} | {p['false_alarm_80']:.3f} | {p['recall_80']:.3f} |")
    first = next(iter(results["sizes"].values()))
    lines += ["", "Recall per category (hashmatch at the first size; pdqhash + 8 rotations):", "",
              "| category | hashmatch | pdqhash + rotations |", "|---|---|---|"]
    peer = results["peers"]["pdqhash PDQ <= 31, 8 rotations"]["recall_by_category_80"]
    for cat, value in sorted(first["recall_by_category"].items()):
        lines.append(f"| {cat} | {value:.3f} | {peer.get(cat, 0):.3f} |")
    lines += ["", "Recall per edit (hashmatch at the first size; * = not in the robustness "
              "suite):", "", "| edit | recall |", "|---|---|"]
    for edit, value in first["recall_by_edit"].items():
        lines.append(f"| {edit}{' *' if edit in HELD_OUT_EDITS else ''} | {value:.3f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="comma-separated database sizes")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in (args.sizes or ("80,500" if args.quick else
                                              "80,4000,100000,1000000")).split(",")]
    results = run(args.quick, sizes, args.workers)
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "results.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    print(text)
    if not args.no_write and RESULTS.exists():
        doc = RESULTS.read_text()
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN) + len(BEGIN)] + "\n" + text + "\n" + doc[doc.index(END):]
        else:
            doc += f"\n## Precision\n\n{BEGIN}\n{text}\n{END}\n"
        RESULTS.write_text(doc)


if __name__ == "__main__":
    main()
