"""Fast phash against imagehash.phash, and what the lean JPEG decode adds (issue 2).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/phash_fast.py [--runs 7] [--no-drift]

Speed: per class (bench_hash.py's JPEG classes: public photos and receipts, 48 each; generated
JPEG 640x480, 1920x1080, 4032x3024, 12 each), every system is timed on each file in
turn, ``--runs`` times; per file the minimum and the median, summed over the class.
Systems: imagehash.phash(Image.open(path)); hashmatch.hash_file(path, "phash") (fast);
the same with the lean JPEG decode switched off (Pillow's draft decode instead); PDQ
fast both ways. Drift: phash/dhash/ahash fast vs exact on every image of ../shared/data (529).
Prints only; the figures are copied into benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import hashmatch as hm  # noqa: E402
from bench_hash import build_classes, interleaved_times  # noqa: E402
from hashmatch import decode as decoding  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "public-corpus"


def classes() -> dict[str, list[Path]]:
    """bench_hash.py's JPEG classes, the corpus ones at 48 files, the generated at 12."""
    return {name: files for name, files in build_classes(12).items() if not name.startswith("png")}


def without_lean_decode(fn):
    def run(path):
        saved, decoding._simplejpeg = decoding._simplejpeg, None
        try:
            return fn(path)
        finally:
            decoding._simplejpeg = saved
    return run


SYSTEMS = {
    "imagehash phash": lambda p: imagehash.phash(Image.open(p)),
    "phash fast": lambda p: hm.hash_file(p, "phash"),
    "phash fast, Pillow decode": without_lean_decode(lambda p: hm.hash_file(p, "phash")),
    "pdq fast": lambda p: hm.hash_file(p),
    "pdq fast, Pillow decode": without_lean_decode(lambda p: hm.hash_file(p)),
}


def speed(runs: int) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    for name, files in classes().items():
        times = interleaved_times(SYSTEMS, files, runs)
        base_min = times["imagehash phash"].min(axis=0).sum()
        base_med = np.median(times["imagehash phash"], axis=0).sum()
        for key, t in times.items():
            low, mid = t.min(axis=0).sum(), np.median(t, axis=0).sum()
            print(f"{name:16s} {key:26s} min {1000 * low / len(files):7.3f} ms  "
                  f"median {1000 * mid / len(files):7.3f} ms  imagehash.phash / this: "
                  f"min {base_min / low:5.2f}x  median {base_med / mid:5.2f}x", flush=True)
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


DATA = ROOT.parent / "shared" / "data"


def drift_files() -> list[Path]:
    """Every image of ../shared/data: the public corpus (photos, receipts) and the PDQ
    reference images (JPEG, PNG, WebP)."""
    return sorted(p for p in DATA.rglob("*") if p.suffix.lower() in (".jpg", ".png", ".webp"))


def drift() -> None:
    """Fast vs exact, ``hash_file`` both ways: median / p99 / max bits of 64 per algorithm,
    printed as the markdown row RESULTS.md records."""
    files = drift_files()
    cells = []
    for algorithm in ("phash", "dhash", "ahash"):
        d = np.array([hm.hash_file(f, algorithm) - hm.hash_file(f, algorithm, exact=True)
                      for f in files])
        print(f"drift {algorithm} fast vs exact, {len(d)} images: median "
              f"{np.median(d):.0f} / p99 {np.percentile(d, 99):.1f} / max {d.max()}",
              flush=True)
        cells.append(f"{np.median(d):.0f} / {np.percentile(d, 99):.1f} / {d.max()}")
    print("| " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--no-drift", action="store_true")
    args = parser.parse_args()
    if not args.no_drift:
        drift()
    speed(args.runs)


if __name__ == "__main__":
    main()
