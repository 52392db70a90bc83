"""Hashing throughput: hashmatch vs pdqhash vs imagehash, same files, same run, one process.

    .venv/bin/python benchmarks/bench_hash.py [--runs 5] [--per-class 24]

Per image class (public photos, receipts, generated JPEG 640x480 / 1920x1080 / 4032x3024, PNG
1080x2340 screenshots) it times, file -> fingerprint, images per second (median of --runs):
hashmatch pdq fast and exact, pdqhash (file -> PIL -> RGB array -> pdqhash.compute, as its
README does), imagehash phash (file -> PIL -> phash), hashmatch phash fast and exact, and the
floors: Pillow full decode to RGB, and draft (DCT-domain) decode to luma.
Writes the table between the BENCH_HASH markers of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "public-corpus"
WORK = HERE / "_work" / "hash"
RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- BENCH_HASH:BEGIN -->", "<!-- BENCH_HASH:END -->"


def machine_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _photo_source(i: int) -> Image.Image:
    photos = sorted((DATA / "photos").glob("*.jpg"))
    return Image.open(photos[i % len(photos)]).convert("RGB")


def _screenshot(i: int, size=(1080, 2340)) -> Image.Image:
    rng = np.random.default_rng(i)
    shot = Image.new("RGB", size, (240, 240, 240))
    draw = ImageDraw.Draw(shot)
    draw.rectangle([0, 0, size[0], 160], fill=(20, 90, 80))
    font = ImageFont.load_default(size=40)
    y = 220
    while y < size[1] - 700:
        width = int(rng.integers(400, 950))
        x0 = size[0] - width - 40 if rng.random() < 0.5 else 40
        draw.rounded_rectangle([x0, y, x0 + width, y + 120], 24, fill=(255, 255, 255))
        draw.text((x0 + 30, y + 38), "message " * int(width / 170), font=font, fill=(10, 10, 10))
        y += 170
    photo = _photo_source(i).resize((size[0] - 160, 560))
    shot.paste(photo, (80, size[1] - 650))
    return shot


def build_classes(per_class: int) -> dict[str, list[Path]]:
    """Files per class; generated ones are made once under benchmarks/_work."""
    WORK.mkdir(parents=True, exist_ok=True)
    classes = {
        "corpus photos": sorted((DATA / "photos").glob("*.jpg"))[:per_class * 4],
        "corpus receipts": sorted((DATA / "receipts").glob("*.jpg"))[:per_class * 4],
    }
    for name, size in [("jpeg 640x480", (640, 480)), ("jpeg 1920x1080", (1920, 1080)),
                       ("jpeg 4032x3024", (4032, 3024))]:
        files = []
        for i in range(per_class):
            path = WORK / f"{size[0]}x{size[1]}-{i}.jpg"
            if not path.exists():
                _photo_source(i).resize(size, Image.Resampling.BICUBIC).save(path, quality=90)
            files.append(path)
        classes[name] = files
    files = []
    for i in range(per_class):
        path = WORK / f"screenshot-{i}.png"
        if not path.exists():
            _screenshot(i).save(path)
        files.append(path)
    classes["png 1080x2340"] = files
    return classes


def systems():
    import imagehash
    import pdqhash

    import hashmatch as hm
    from hashmatch.decode import decode
    from hashmatch.hashers.pdq import FAST_MIN_SIDE

    def pdqhash_file(path):
        return pdqhash.compute(np.asarray(Image.open(path).convert("RGB")))

    return {
        "hashmatch pdq fast": lambda p: hm.hash_file(p),
        "hashmatch pdq exact": lambda p: hm.hash_file(p, exact=True),
        "pdqhash": pdqhash_file,
        "hashmatch phash fast": lambda p: hm.hash_file(p, "phash"),
        "hashmatch phash exact": lambda p: hm.hash_file(p, "phash", exact=True),
        "imagehash phash": lambda p: imagehash.phash(Image.open(p)),
        "floor: Pillow decode RGB": lambda p: Image.open(p).convert("RGB").load(),
        "floor: draft decode L": lambda p: decode(p, mode="L", draft_min_side=FAST_MIN_SIDE),
    }


def interleaved_times(fns: dict, files, runs: int) -> dict[str, np.ndarray]:
    """Seconds per (run, file) for each system, timed file by file in turn (not one whole
    class after another): on a shared machine a burst of other work then lands on every
    system alike instead of on one column.

    The order of the systems rotates from one file (and run) to the next, so each follows
    every other equally often. A system timed right after one that sweeps megabytes
    (pdqhash's float buffers, a full RGB decode) runs with cold caches -- right after
    pdqhash, per small JPEG: fast phash +0.2-0.3 ms, imagehash.phash +0.3-0.8 ms
    (RESULTS.md) -- and a fixed order hands that handicap to the same columns every time.
    """
    for fn in fns.values():
        fn(files[0])  # warm caches and lazy imports
    names = list(fns)
    times = {name: np.zeros((runs, len(files))) for name in fns}
    for run in range(runs):
        for i, path in enumerate(files):
            shift = (i + run) % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                fns[name](path)
                times[name][run, i] = time.perf_counter() - start
    return times


def time_interleaved(fns: dict, files, runs: int) -> dict[str, float]:
    """Images/s per system: each file's median over ``runs`` (interleaved_times), summed."""
    times = interleaved_times(fns, files, runs)
    return {name: len(files) / float(np.median(t, axis=0).sum()) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=12)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    classes = build_classes(args.per_class)
    table = {}
    for cls, files in classes.items():
        table[cls] = time_interleaved(systems(), files, args.runs)
        for name, rate in table[cls].items():
            print(f"{cls:16s} {name:26s} {rate:9.1f} img/s", flush=True)
    report = render(table, classes, args)
    print(report)
    if not args.no_write:
        write_section(report)


def render(table, classes, args) -> str:
    names = list(next(iter(table.values())))
    lines = [
        f"Machine: {machine_name()}. One process, images/s, file on disk -> fingerprint; "
        f"systems timed in turn on each file (order rotated per file), each file's median of {args.runs} runs, then "
        f"summed (`uptime` load during the run: {os.getloadavg()[0]:.1f}). Reproduce: `.venv/bin/python benchmarks/bench_hash.py "
        f"--runs {args.runs} --per-class {args.per_class}`.",
        "",
        "| class (files) | " + " | ".join(names) + " | pdq fast / pdqhash | pdq fast / floor "
        "| phash fast / imagehash |",
        "|---" * (len(names) + 4) + "|",
    ]
    for cls, row in table.items():
        floor = row["floor: draft decode L"] if cls.startswith(("jpeg", "corpus")) \
            else row["floor: Pillow decode RGB"]
        cells = [f"{row[n]:.1f}" for n in names]
        lines.append(
            f"| {cls} ({len(classes[cls])}) | " + " | ".join(cells)
            + f" | {row['hashmatch pdq fast'] / row['pdqhash']:.1f}x"
            + f" | {row['hashmatch pdq fast'] / floor:.2f}"
            + f" | {row['hashmatch phash fast'] / row['imagehash phash']:.1f}x |")
    lines.append("")
    lines.append("`pdq fast / floor` is the share of the decode floor's speed that fast PDQ keeps "
                 "(1.0 = hashing is free); the floor is the draft decode for JPEG classes and "
                 "the full decode for PNG.")
    return "\n".join(lines)


def write_section(body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n## Hashing throughput (bench_hash.py)\n\n" + section + "\n"
    RESULTS.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
