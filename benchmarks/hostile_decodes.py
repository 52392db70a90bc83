"""Peak memory of hostile decodes (issue 16 items 8 and 9): small files that decode to GBs.

    .venv/bin/python benchmarks/hostile_decodes.py      # ~1-2 minutes; prints a table

Each file is hashed (PDQ, fast and exact mode) in a fresh process; the figure is that
process's peak RSS (resource.getrusage ru_maxrss) and its time, next to the baseline of a
process that only imported hashmatch. benchmarks/reliability.py calls :func:`measure` and
writes the rows into RESULTS.md's reliability table.
"""
from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

CHILD = r"""
import json, resource, sys, time
import hashmatch as hm
path, exact = sys.argv[1], sys.argv[2] == "exact"
started = time.monotonic()
outcome = "hashed"
if path != "-":
    try:
        hm.hash_file(path, exact=exact)
    except hm.HashmatchError as exc:
        outcome = "refused: " + exc.reason if hasattr(exc, "reason") else str(exc)[:60]
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {exc}"[:90]
print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started,
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_rgba16(side: int) -> bytes:
    """A complete side x side 16-bit RGBA PNG (a soft gradient: compresses ~1000x)."""
    packer = zlib.compressobj(9)
    parts = []
    row = np.zeros((side, 4), ">u2")
    for y in range(side):
        row[:, 0] = (y * 65535) // side
        row[:, 3] = 65535
        parts.append(packer.compress(b"\0" + row.tobytes()))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 16, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def png_rgb(side: int) -> bytes:
    """A complete side x side 8-bit RGB PNG (a gradient)."""
    packer = zlib.compressobj(6)
    parts = []
    row = np.zeros((side, 3), np.uint8)
    row[:, 1] = np.arange(side) % 256
    for y in range(side):
        row[:, 0] = y % 256
        parts.append(packer.compress(b"\0" + row.tobytes()))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def webp_large(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (side, side), (90, 120, 200)).save(out, "WEBP", lossless=True, method=0)
    return out.getvalue()


def jpeg_forged(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(out, "JPEG", quality=50)
    real = out.getvalue()
    at = real.index(b"\xff\xc0")
    return real[: at + 5] + struct.pack(">HH", side, side) + real[at + 9:]


def jpeg_large(side: int) -> bytes:
    small = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
    out = io.BytesIO()
    Image.fromarray(small).resize((side, side), Image.BILINEAR).save(out, "JPEG", quality=30)
    return out.getvalue()


def tiff_constant_float() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((64, 64), -5.0, np.float32)).save(out, "TIFF")
    return out.getvalue()


CASES = [  # (name, builder)
    ("16-bit RGBA PNG 13000x13000", lambda: png_rgba16(13000)),
    ("lossless WebP 12960x12960 (168 Mpx)", lambda: webp_large(12960)),
    ("JPEG, forged 13000x13000 header", lambda: jpeg_forged(13000)),
    ("JPEG 13000x13000, real data", lambda: jpeg_large(13000)),
    ("constant float TIFF (mode F, -5.0)", tiff_constant_float),
    ("RGB PNG 11000x11000 (just under the default budget)", lambda: png_rgb(11000)),
]


def _run(path: str, mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, path, mode], capture_output=True,
                            text=True, timeout=300)
    if result.returncode:
        return {"outcome": f"exit {result.returncode}: {result.stderr[-200:]}",
                "seconds": float("nan"), "rss_mb": float("nan")}
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(work: str | None = None) -> dict:
    """{"baseline_rss_mb", "cases": [{name, bytes, fast: {...}, exact: {...}}]}"""
    with tempfile.TemporaryDirectory() as tmp:
        work = work or tmp
        rows = []
        # Built in another process: building the large ones takes GBs, and a child's
        # ru_maxrss starts from its parent's peak (it survives fork and exec).
        subprocess.run([sys.executable, os.path.abspath(__file__), "--build", work], check=True,
                       timeout=600)
        for number, (name, _) in enumerate(CASES):
            path = os.path.join(work, f"hostile-{number}.bin")
            rows.append({"name": name, "bytes": os.path.getsize(path),
                         "fast": _run(path, "fast"), "exact": _run(path, "exact")})
            os.unlink(path)
            print(f"  {name}: {rows[-1]}", flush=True)
        return {"baseline_rss_mb": _run("-", "fast")["rss_mb"], "cases": rows}


def table_rows(figures: dict) -> list[str]:
    """Markdown rows for RESULTS.md's reliability table."""
    def cell(r):
        return f"{r['rss_mb']:.0f} MB, {r['seconds']:.1f} s, {r['outcome']}"
    return [f"| hostile decode: {c['name']} ({c['bytes']:,} bytes): peak RSS fast / exact | "
            f"{cell(c['fast'])} / {cell(c['exact'])} |" for c in figures["cases"]]


def build(work: str) -> None:
    for number, (_, builder) in enumerate(CASES):
        with open(os.path.join(work, f"hostile-{number}.bin"), "wb") as handle:
            handle.write(builder())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build(sys.argv[2])
        sys.exit(0)
    figures = measure()
    print(f"baseline (import only): {figures['baseline_rss_mb']:.0f} MB")
    print("\n".join(table_rows(figures)))
