"""A corpus of broken, hostile and odd image files, built from scratch (deterministic per seed).

Each case is (name, bytes, expect): ``expect`` is "ok" (must hash), "error" (must be one
``hashmatch.ImageError``) or "any" (either is fine; never anything else). ``name`` carries the
file extension the case is written with, so wrong extensions are tested too.

Used by tests/reliability/test_fuzz_images.py (a small seed set in ``make test``) and by
benchmarks/reliability.py (many seeds).
"""
from __future__ import annotations

import io
import random
import struct
import zipfile
import zlib

import numpy as np
from PIL import Image

BOMB_SIDE = 30000


def _picture(width=96, height=72, seed=0) -> Image.Image:
    """A small RGB picture with structure (gradients + blocks + noise), so hashes have quality."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    arr = np.stack([(x * 255 // max(width - 1, 1)), (y * 255 // max(height - 1, 1)),
                    ((x // 8 + y // 8) % 2) * 200], axis=-1).astype(np.int32)
    arr += rng.integers(-20, 20, size=arr.shape)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def base_images(seed: int = 0) -> dict[str, bytes]:
    """Valid files of every common format: the seeds that mutations start from."""
    pic = _picture(seed=seed)
    frames = [_picture(seed=seed + k).convert("P") for k in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    apng = io.BytesIO()
    pic.save(apng, "PNG", save_all=True, append_images=[_picture(seed=seed + 9)], duration=40)
    return {
        "base.jpg": _save(pic, "JPEG", quality=85),
        "base-progressive.jpg": _save(pic, "JPEG", quality=70, progressive=True),
        "base.png": _save(pic, "PNG"),
        "base.gif": gif.getvalue(),
        "base-apng.png": apng.getvalue(),
        "base.bmp": _save(pic, "BMP"),
        "base.tif": _save(pic, "TIFF"),
        "base-lzw.tif": _save(pic, "TIFF", compression="tiff_lzw"),
        "base.webp": _save(pic, "WEBP", quality=80),
        "base.ico": _save(pic.resize((32, 32)), "ICO"),
        "base.ppm": _save(pic, "PPM"),
        "base.tga": _save(pic, "TGA"),
    }


# -- header-only decompression bombs: tiny files that claim 30000 x 30000 pixels ---------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width=BOMB_SIDE, height=BOMB_SIDE, with_data=True) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = _png_chunk(b"IHDR", ihdr)
    if with_data:  # one compressed row of zeros: the rest is "missing"
        body += _png_chunk(b"IDAT", zlib.compress(b"\0" * (1 + 3 * min(width, 4096))))
    return b"\x89PNG\r\n\x1a\n" + body + _png_chunk(b"IEND", b"")


def png_zip_bomb(side: int) -> bytes:
    """A *complete* grey PNG of zeros, side x side: deflate makes it ~1000x smaller than its pixels."""
    raw = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    parts = [raw.compress(row) for _ in range(side)] + [raw.flush()]
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", b"".join(parts)) + _png_chunk(b"IEND", b""))


def gif_bomb(width=BOMB_SIDE, height=BOMB_SIDE) -> bytes:
    screen = struct.pack("<HHBBB", width, height, 0x80, 0, 0)  # global colour table of 2
    palette = b"\0\0\0\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0)
    data = b"\x02\x02\x44\x01\x00"  # LZW min code size 2, one tiny sub-block
    return b"GIF89a" + screen + palette + descriptor + data + b"\x3b"


def jpeg_sof_bomb(width=BOMB_SIDE, height=BOMB_SIDE) -> bytes:
    real = _save(_picture(16, 16), "JPEG", quality=50)
    # Rewrite the SOF0 frame size of a real JPEG: tables intact, scan data far too short.
    at = real.index(b"\xff\xc0")
    return real[: at + 5] + struct.pack(">HH", height, width) + real[at + 9:]


def bmp_bomb(width=BOMB_SIDE, height=BOMB_SIDE) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info) + 16, 0, 0, 14 + len(info)) + info + b"\0" * 16


def tiff_bomb(width=BOMB_SIDE, height=BOMB_SIDE) -> bytes:
    entries = [  # tag, type, count, value
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1),
        (262, 3, 1, 1), (273, 4, 1, 8), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16),
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count)
        ifd += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 24) + b"\0" * 16 + ifd


def bombs() -> dict[str, bytes]:
    """Header-only files claiming 30000 x 30000 (900 Mpx): must be refused before decoding."""
    return {
        "bomb-png.png": png_bomb(),
        "bomb-png-header-only.png": png_bomb(with_data=False),
        "bomb-png-wide.png": png_bomb(2**31 - 1, 1),
        "bomb-gif.gif": gif_bomb(),
        "bomb-gif-max.gif": gif_bomb(65535, 65535),
        "bomb-jpeg-sof.jpg": jpeg_sof_bomb(),
        "bomb-jpeg-sof-max.jpg": jpeg_sof_bomb(65535, 65535),
        "bomb-bmp.bmp": bmp_bomb(),
        "bomb-bmp-negative.bmp": bmp_bomb(BOMB_SIDE, -BOMB_SIDE),
        "bomb-tiff.tif": tiff_bomb(),
        "bomb-png-as.jpg": png_bomb(),
    }


# -- structural oddities -----------------------------------------------------------------------
def _exif_with_orientation(value_bytes: bytes, kind: int, count: int = 1) -> bytes:
    """A raw little-endian EXIF block with one Orientation entry of any type/value."""
    value = value_bytes.ljust(4, b"\0")[:4]
    ifd = struct.pack("<H", 1) + struct.pack("<HHI", 0x0112, kind, count) + value + b"\0\0\0\0"
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd


def oddities(seed: int = 0) -> dict[str, tuple[bytes, str]]:
    pic = _picture(seed=seed)
    out: dict[str, tuple[bytes, str]] = {}
    # 1x1 in every format
    for fmt, ext in (("JPEG", "jpg"), ("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"),
                     ("TIFF", "tif"), ("WEBP", "webp"), ("ICO", "ico")):
        out[f"one-pixel.{ext}"] = (_save(Image.new("RGB", (1, 1), (200, 10, 10)), fmt), "ok")
    out["one-by-many.png"] = (_save(Image.new("L", (1, 5000), 7), "PNG"), "ok")
    out["many-by-one.png"] = (_save(Image.new("L", (5000, 1), 7), "PNG"), "ok")
    # colour modes and depths
    out["cmyk.jpg"] = (_save(pic.convert("CMYK"), "JPEG"), "ok")
    out["cmyk.tif"] = (_save(pic.convert("CMYK"), "TIFF"), "ok")
    grey16 = Image.fromarray(np.asarray(pic.convert("L"), np.uint16) * 257)
    out["grey16.png"] = (_save(grey16, "PNG"), "ok")
    out["grey16.tif"] = (_save(grey16, "TIFF"), "ok")
    out["int32.tif"] = (_save(pic.convert("I"), "TIFF"), "ok")
    out["float.tif"] = (_save(pic.convert("F"), "TIFF"), "ok")
    nan = np.asarray(pic.convert("F"), np.float32).copy()
    nan[::3] = np.nan
    nan[1::5] = np.inf
    out["float-nan-inf.tif"] = (_save(Image.fromarray(nan, "F"), "TIFF"), "ok")
    out["all-nan.tif"] = (_save(Image.fromarray(np.full((8, 8), np.nan, np.float32), "F"),
                                "TIFF"), "ok")
    out["bilevel.png"] = (_save(pic.convert("1"), "PNG"), "ok")
    out["bilevel-g4.tif"] = (_save(pic.convert("1"), "TIFF", compression="group4"), "ok")
    out["la.png"] = (_save(pic.convert("LA"), "PNG"), "ok")
    out["rgba-transparent.png"] = (_save(Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "PNG"), "ok")
    pal = pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    out["palette4.png"] = (_save(pal, "PNG"), "ok")
    out["palette-trns.png"] = (_save(pal, "PNG", transparency=1), "ok")
    out["palette-trns.gif"] = (_save(pal, "GIF", transparency=1), "ok")
    # a palette image whose indices point past a 2-colour palette (PLTE shorter than used)
    png = _save(pic.convert("P", palette=Image.Palette.ADAPTIVE, colors=200), "PNG")
    at = png.index(b"PLTE") - 4
    length = struct.unpack(">I", png[at:at + 4])[0]
    short = png[:at] + _png_chunk(b"PLTE", b"\x10\x20\x30\x40\x50\x60") + png[at + 12 + length:]
    out["palette-short.png"] = (short, "any")
    out["ycbcr.jpg"] = (_save(pic.convert("YCbCr"), "JPEG"), "ok")
    out["lab.tif"] = (_save(pic.convert("LAB"), "TIFF"), "ok")
    out["grey.jpg"] = (_save(pic.convert("L"), "JPEG"), "ok")
    # EXIF orientation values outside 1..8 and of the wrong type
    jpeg_plain = _save(pic, "JPEG")
    for label, raw, kind, count in (
        ("0", struct.pack("<H", 0), 3, 1), ("9", struct.pack("<H", 9), 3, 1),
        ("65535", struct.pack("<H", 65535), 3, 1), ("ascii", b"6\0", 2, 2),
        ("long-huge", struct.pack("<I", 2**32 - 1), 4, 1), ("rational", struct.pack("<I", 8), 5, 1),
        ("count-zero", struct.pack("<H", 6), 3, 0), ("count-huge", struct.pack("<I", 8), 3, 2**30),
        ("signed-negative", struct.pack("<h", -6), 8, 1),
    ):
        exif = _exif_with_orientation(raw, kind, count)
        app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif
        out[f"exif-orientation-{label}.jpg"] = (jpeg_plain[:2] + app1 + jpeg_plain[2:], "ok")
    for value in (0, 9, 65535):
        exif = Image.Exif()
        exif[0x0112] = value
        out[f"exif-orientation-{value}.png"] = (_save(pic, "PNG", exif=exif), "ok")
    truncated_exif = _exif_with_orientation(struct.pack("<H", 6), 3)[:14]
    app1 = b"\xff\xe1" + struct.pack(">H", len(truncated_exif) + 2) + truncated_exif
    out["exif-truncated.jpg"] = (jpeg_plain[:2] + app1 + jpeg_plain[2:], "any")
    # animated files with broken later frames
    bases = base_images(seed)
    gif = bases["base.gif"]
    second = gif.index(b"\x2c", gif.index(b"\x2c") + 10)  # roughly the 2nd image descriptor
    out["animated-broken-frame.gif"] = (gif[:second + 12] + b"\xff" * 40 + b"\x3b", "any")
    out["animated-cut.gif"] = (gif[: len(gif) * 2 // 3], "any")
    frame_bomb = gif[:second] + b"\x2c" + struct.pack("<HHHHB", 0, 0, 30000, 30000, 0) + \
        b"\x02\x02\x44\x01\x00\x3b"
    out["animated-frame-bomb.gif"] = (frame_bomb, "any")
    apng = bases["base-apng.png"]
    fctl = apng.rindex(b"fcTL")
    out["apng-broken-fctl.png"] = (apng[:fctl + 8] + b"\xff" * 16 + apng[fctl + 24:], "any")
    # polyglots
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z:
        z.writestr("evil.sh", "touch /tmp/pwned\n")
    out["polyglot-jpeg-zip.jpg"] = (bases["base.jpg"] + zbuf.getvalue(), "ok")
    out["polyglot-png-html.png"] = (bases["base.png"] + b"<html><script>alert(1)</script></html>",
                                    "ok")
    out["polyglot-gif-js.gif"] = (b"GIF89a/*" + bases["base.gif"][8:] + b"*/=alert(1);", "any")
    out["polyglot-zip-then-jpeg.jpg"] = (zbuf.getvalue() + bases["base.jpg"], "error")
    out["polyglot-html-then-png.png"] = (b"<html>" + bases["base.png"], "error")
    out["pdf-with-jpeg.jpg"] = (b"%PDF-1.4\n" + bases["base.jpg"], "error")
    out["svg.png"] = (b'<svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>', "error")
    out["xml-entity-bomb.png"] = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa">]><l>&a;</l>',
                                  "error")
    # wrong extensions, empty and nonsense
    out["png-named.jpg"] = (bases["base.png"], "ok")
    out["jpeg-named.png"] = (bases["base.jpg"], "ok")
    out["gif-named.bmp"] = (bases["base.gif"], "ok")
    out["text-named.jpg"] = (b"hello, this is not a picture\n" * 10, "error")
    out["empty.jpg"] = (b"", "error")
    out["zeros.png"] = (b"\0" * 4096, "error")
    out["magic-only.jpg"] = (b"\xff\xd8\xff", "error")
    out["magic-only.png"] = (b"\x89PNG\r\n\x1a\n", "error")
    out["magic-only.gif"] = (b"GIF89a", "error")
    out["heic.jpg"] = (b"\0\0\0\x18ftypheic" + b"\0" * 64, "error")
    rng = random.Random(seed)
    out["random.jpg"] = (bytes(rng.getrandbits(8) for _ in range(2048)), "error")
    return out


# -- mutations of valid files ------------------------------------------------------------------
def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random mutation: truncation, header or body bit flips, byte runs, chunk splices."""
    kind = rng.choice(["truncate", "flip-header", "flip-body", "flip-many", "overwrite",
                       "duplicate", "insert", "zero-run"])
    buf = bytearray(data)
    n = len(buf)
    if n < 2:
        return "grow", bytes(buf) + bytes(rng.getrandbits(8) for _ in range(16))
    if kind == "truncate":
        return kind, bytes(buf[: rng.randrange(1, n)])
    if kind == "flip-header":
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(min(n, 64))
            buf[at] ^= 1 << rng.randrange(8)
    elif kind == "flip-body":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(min(n, 64), n) if n > 64 else rng.randrange(n)
            buf[at] ^= 1 << rng.randrange(8)
    elif kind == "flip-many":
        for _ in range(max(1, n // 50)):
            buf[rng.randrange(n)] = rng.getrandbits(8)
    elif kind == "overwrite":
        at = rng.randrange(n)
        value = rng.choice([b"\xff", b"\x00", b"\x7f", b"\x80"]) * rng.randint(1, 8)
        buf[at:at + len(value)] = value
    elif kind == "duplicate":
        a, b = sorted(rng.randrange(n) for _ in range(2))
        buf[b:b] = buf[a:b][:4096]
    elif kind == "insert":
        at = rng.randrange(n)
        buf[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 32)))
    elif kind == "zero-run":
        at = rng.randrange(n)
        buf[at:at + rng.randint(1, 256)] = b"\0" * min(256, n - at)
    return kind, bytes(buf)


def mutated(seed: int, count: int) -> dict[str, bytes]:
    """``count`` mutants of the base images (and, sometimes, of a mutant of a mutant)."""
    rng = random.Random(seed)
    bases = base_images(seed)
    names = sorted(bases)
    out = {}
    for k in range(count):
        name = rng.choice(names)
        data = bases[name]
        kinds = []
        for _ in range(1 if rng.random() < 0.8 else rng.randint(2, 4)):
            kind, data = mutate(data, rng)
            kinds.append(kind)
        if not data:
            data = b"\0"
        stem, ext = name.rsplit(".", 1)
        if rng.random() < 0.1:  # wrong extension now and then
            ext = rng.choice(["jpg", "png", "gif", "bmp", "tif", "webp"])
        out[f"mut{seed}-{k:05d}-{stem}-{'+'.join(kinds)}.{ext}"] = data
    return out


def build(seed: int = 0, n_mutants: int = 200) -> list[tuple[str, bytes, str]]:
    """The whole corpus: (file name, bytes, expect)."""
    cases = [(name, data, "ok") for name, data in base_images(seed).items()]
    cases += [(name, data, "error") for name, data in bombs().items()]
    cases += [(name, data, expect) for name, (data, expect) in oddities(seed).items()]
    cases += [(name, data, "any") for name, data in mutated(seed, n_mutants).items()]
    return cases


def write(folder, cases) -> list:
    """Write cases into ``folder``; returns [(path, expect)]."""
    import os

    os.makedirs(folder, exist_ok=True)
    written = []
    for name, data, expect in cases:
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(data)
        written.append((path, expect))
    return written
