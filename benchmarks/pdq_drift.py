"""PDQ fast mode: Hamming drift from exact mode, and speed against pdqhash.

    .venv/bin/python benchmarks/pdq_drift.py [--min-sides 128,192,256] [--runs 5]

Drift: on the 480 public-corpus images (as stored) and on large JPEGs generated from the
corpus photos and on PNG screenshots, fast hash (hashmatch.hash_file: JPEG draft decode
to "L" keeping both sides >= S, other formats decoded whole and converted to "L", then
the sparse-matrix kernel) vs
exact hash of the full RGB decode (== pdqhash.compute). Also the kernel's own drift:
fast vs exact on the very same full-resolution RGB pixels (rounding only). Speed: file -> hash per image, one process, median of
``--runs`` runs over each class, for pdqhash (file -> PIL -> array -> pdqhash.compute),
hashmatch exact (decode full RGB + exact kernels), hashmatch fast (hash_file), and the
decode floor (what fast decodes: decode(mode="L", draft) -- for PNG that includes the
conversion to "L"; bench_hash.py's PNG floor is the bare RGB decode). Generated images go to benchmarks/_work/ (git-ignored).
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import hashmatch  # noqa: E402
from hashmatch.decode import decode  # noqa: E402
from hashmatch.hashers import pdq  # noqa: E402

CORPUS = ROOT.parent / "shared" / "data" / "public-corpus"
WORK = ROOT / "benchmarks" / "_work" / "pdq"


def corpus_files():
    return sorted((CORPUS / "photos").glob("*.jpg")) + sorted((CORPUS / "receipts").glob("*.jpg"))


# -- test images -------------------------------------------------------------------------
def make_jpeg_class(size, count):
    """``count`` JPEGs of ``size`` from corpus photos: resized, light noise, quality 90."""
    folder = WORK / f"jpeg-{size[0]}x{size[1]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(size[0])
    for index, source in enumerate(corpus_files()[:count * 7:7]):
        path = folder / f"{index:03d}.jpg"
        if not path.exists():
            with Image.open(source) as image:
                big = np.asarray(image.convert("RGB").resize(size, Image.LANCZOS), np.int16)
            noisy = (big + rng.integers(-6, 7, big.shape)).clip(0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(path, quality=90)
        paths.append(path)
    return paths


def make_screenshot_class(count, size=(1080, 2340)):
    """Phone-screenshot-like PNGs: flat UI colours, text lines, one embedded photo."""
    folder = WORK / "png-screenshot"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    rng = np.random.default_rng(1)
    for index, source in enumerate(corpus_files()[3:count * 11:11]):
        path = folder / f"{index:03d}.png"
        if not path.exists():
            canvas = Image.new("RGB", size, tuple(int(v) for v in rng.integers(200, 256, 3)))
            draw = ImageDraw.Draw(canvas)
            draw.rectangle([0, 0, size[0], 180], fill=tuple(int(v) for v in rng.integers(0, 120, 3)))
            with Image.open(source) as photo:
                canvas.paste(photo.convert("RGB").resize((1000, 1300)), (40, 260))
            for line in range(30):
                y = 1600 + line * 24
                draw.text((40, y), f"message {line} " + "lorem ipsum dolor " * (line % 4 + 1),
                          fill=(20, 20, 20))
            canvas.save(path)
        paths.append(path)
    return paths


# -- the pipelines -----------------------------------------------------------------------
def hash_pdqhash(path):
    with Image.open(path) as image:
        return pdqhash.compute(np.asarray(image.convert("RGB")))


def hash_exact(path):
    """hashmatch.hash_file(exact=True): full RGB decode (EXIF-oriented, as the fast path)."""
    return hashmatch.hash_file(path, exact=True)


def hash_fast(path):
    """The product's fast path: hashmatch.hash_file (decode(mode="L", draft) + kernel)."""
    return hashmatch.hash_file(path)


def decode_floor(path):
    """What hash_fast decodes, without hashing: decode(mode="L", draft_min_side=S)."""
    return decode(path, mode="L", draft_min_side=pdq.FAST_MIN_SIDE)


def full_decode(path):
    with Image.open(path) as image:
        image.load()


# -- measurements ------------------------------------------------------------------------
def drift(paths, min_side):
    """Per image: (Hamming distance fast vs exact, exact quality)."""
    pdq.FAST_MIN_SIDE = min_side
    out = []
    for path in paths:
        exact = hash_exact(path)
        out.append((hash_fast(path) - exact, exact.quality))
    return np.array(out)


def kernel_drift(paths):
    """Fast vs exact on the same full-resolution RGB array: the arithmetic alone."""
    out = []
    for path in paths:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))
        exact = pdq.pdq_hash_image(rgb)
        fast = pdq.pdq_hash_image(rgb, exact=False)
        out.append((fast - exact, exact.quality, abs(fast.quality - exact.quality)))
    return np.array(out)


def summarise(distances):
    if len(distances) == 0:
        return "n=0"
    d = np.asarray(distances)
    return (f"n={len(d)} median={np.median(d):.0f} p99={np.percentile(d, 99):.1f} "
            f"max={d.max()}")


def per_image_ms(function, paths, runs):
    medians = []
    for _ in range(runs):
        start = time.perf_counter()
        for path in paths:
            function(path)
        medians.append((time.perf_counter() - start) / len(paths) * 1e3)
    return float(np.median(medians))


def machine():
    model = "unknown CPU"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import os

    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-sides", default="128,192,256,384")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--skip-drift", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--fast-min-side", type=int, default=None,
                        help="FAST_MIN_SIDE for the speed runs (default: the library's)")
    args = parser.parse_args()
    chosen = args.fast_min_side or pdq.FAST_MIN_SIDE
    print(f"machine: {machine()}")
    classes = {
        "jpeg 640x480": make_jpeg_class((640, 480), args.per_class),
        "jpeg 1920x1080": make_jpeg_class((1920, 1080), args.per_class),
        "jpeg 4032x3024": make_jpeg_class((4032, 3024), args.per_class),
        "corpus photos": sorted((CORPUS / "photos").glob("*.jpg"))[: args.per_class * 5],
        "png 1080x2340": make_screenshot_class(args.per_class // 2),
    }
    if not args.skip_drift:
        drift_sets = {"corpus (480, as stored)": corpus_files(),
                      "jpeg 1920x1080": classes["jpeg 1920x1080"],
                      "jpeg 4032x3024": classes["jpeg 4032x3024"],
                      "png 1080x2340": classes["png 1080x2340"]}
        for name, paths in drift_sets.items():
            result = kernel_drift(paths)
            print(f"kernel drift (same RGB pixels) {name}: {summarise(result[:, 0])}; "
                  f"quality differs on {int((result[:, 2] > 0).sum())}")
        for min_side in [int(s) for s in args.min_sides.split(",")]:
            for name, paths in drift_sets.items():
                result = drift(paths, min_side)
                good = result[result[:, 1] >= 80, 0]
                print(f"drift S={min_side} {name}: all {summarise(result[:, 0])}; "
                      f"q>=80 {summarise(good)}")
    pdq.FAST_MIN_SIDE = chosen
    if not args.skip_speed:
        print(f"speed, FAST_MIN_SIDE={chosen}, ms per image (median of {args.runs} runs)")
        for name, paths in classes.items():
            floor = full_decode if name.startswith("png") else decode_floor
            times = {label: per_image_ms(fn, paths, args.runs) for label, fn in
                     [("pdqhash", hash_pdqhash), ("exact", hash_exact), ("fast", hash_fast),
                      ("floor", floor)]}
            print(f"{name}: " + " ".join(f"{k}={v:.2f}" for k, v in times.items())
                  + f" | fast speedup x{times['pdqhash'] / times['fast']:.1f}"
                  f", exact speedup x{times['pdqhash'] / times['exact']:.1f}"
                  f", fast/floor {times['fast'] / times['floor']:.2f}")


if __name__ == "__main__":
    main()
