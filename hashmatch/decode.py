"""Safe image loading: one place where outside bytes become pixels.

Everything hashmatch hashes goes through :func:`decode`: paths, bytes, file objects, PIL images
and numpy arrays. It enforces size limits before decoding (decompression bombs), applies EXIF
orientation, turns every Pillow mode into 8-bit RGB (alpha composited on white) or 8-bit
grey, and reports any failure as one :class:`~hashmatch.ImageError` naming the file and the
reason.

The fast path (``draft_min_side``) asks libjpeg for a DCT-domain downscale (1/2, 1/4, 1/8)
that keeps both sides at least that long, and, when only luma is needed, for the Y channel
alone (no chroma upsampling or colour conversion). Hashers downsample to 64x64 or less anyway;
the drift this causes is measured in benchmarks/RESULTS.md.

That luma-only draft goes straight to libjpeg-turbo through ``simplejpeg`` when the file is
a plain greyscale or YCbCr JPEG (:func:`_lean_jpeg_grey`): the same library, the same
power-of-two scale Pillow's draft picks, so the same pixels, without Pillow's per-file
overhead (plugin parsing, chunked load, copies) -- a third of a small photo's decode time.
Anything else (CMYK, Adobe RGB, MPO, several EXIF blocks, any libjpeg warning or error, no
simplejpeg installed) is decoded by Pillow as before, which also words the errors.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import ImageError

try:
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - a declared dependency; Pillow's draft does the same
    _simplejpeg = None

# 2x Pillow's own warning threshold (89.5 Mpx): a 12,000 x 14,000 scan still loads, a
# 30,000 x 30,000 header-only bomb does not.
DEFAULT_MAX_PIXELS = 179_000_000
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# Memory one decode may take, in bytes: the decoded pixels (Pillow's bytes per pixel of the
# file's mode) plus the conversions to 8-bit RGB/L (see _decode_cost). Pixels alone are not
# enough: a 13000 x 13000 16-bit RGBA PNG is under the pixel limit and took 3.3 GB. 512 MiB
# lets two workers run on a 2 GB machine. Override per call (max_decode_bytes) or for every
# process with the environment variable HASHMATCH_MAX_DECODE_MB.
DEFAULT_MAX_DECODE_BYTES = 512 * 1024 * 1024
MAX_DECODE_ENV = "HASHMATCH_MAX_DECODE_MB"

ORIENTATION_TAG = 0x0112

# Pillow must never silently decode half an image: a truncated file is an error, not a hash.
ImageFile.LOAD_TRUNCATED_IMAGES = False

_KNOWN_UNSUPPORTED = (
    (b"%PDF", "unsupported format: PDF"),
    (b"<svg", "unsupported format: SVG"),
    (b"<?xml", "unsupported format: XML/SVG"),
)


@dataclass(frozen=True)
class Decoded:
    """A decoded image and what an evidence report needs to know about its file."""

    image: Image.Image  # mode "RGB" or "L"
    name: str  # path, or a description such as "<bytes>"
    format: str | None  # "JPEG", "PNG", ... (None for in-memory images)
    original_size: tuple[int, int]  # (width, height) as stored, before draft/EXIF
    sha256: str | None  # of the file bytes; None for in-memory images
    file_size: int | None
    # (width, height) the picture has at full resolution, in ``image``'s orientation, when
    # ``image`` is a DCT-domain downscale of it (None otherwise): hashers that filter at the
    # full resolution's scale (fast PDQ) take it as an argument. Not in ``image.info``:
    # Pillow copies info onto crops, whose full size it is not.
    full_size: tuple[int, int] | None = None


def describe(source) -> str:
    """A short name for a source, for messages."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return "<PIL image>"
    if isinstance(source, np.ndarray):
        return "<array>"
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def read_bytes(source, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, str]:
    """The raw bytes of a path, bytes-like or binary file object, with the size limit applied."""
    name = describe(source)
    if isinstance(source, (str, os.PathLike)):
        try:
            info = os.stat(source)
            # A FIFO would block open() forever and a device (/dev/zero, a disk) never ends:
            # seized file-system extractions contain both. Only regular files are images.
            if not stat.S_ISREG(info.st_mode):
                if stat.S_ISDIR(info.st_mode):
                    raise ImageError(name, "is a directory")
                raise ImageError(name, "not a regular file", _file_kind(info.st_mode))
            size = info.st_size
            if size > max_bytes:
                raise ImageError(name, "too large", f"{size} bytes > limit {max_bytes}")
            with open(source, "rb") as handle:
                # read(n) allocates n bytes up front: ask for what stat saw (+1 to notice
                # growth), not for the 256 MiB limit (that costs ~0.1 ms per small file).
                data = handle.read(size + 1)
                if len(data) > size:  # grew since stat: read on up to the limit
                    data += handle.read(max_bytes + 1 - len(data))
        except ImageError:
            raise
        except IsADirectoryError:
            raise ImageError(name, "is a directory") from None
        except FileNotFoundError:
            raise ImageError(name, "file not found") from None
        except PermissionError:
            raise ImageError(name, "permission denied") from None
        except OSError as exc:
            raise ImageError(name, "unreadable", str(exc)) from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(name, "not a binary file object")
    else:
        raise ImageError(name, "unsupported input type", type(source).__name__)
    if len(data) > max_bytes:
        raise ImageError(name, "too large", f"more than {max_bytes} bytes")
    if not data:
        raise ImageError(name, "empty file")
    return bytes(data), name


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "named pipe"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return kind
    return "special file"


def decode(
    source,
    *,
    mode: str = "RGB",
    exif_transpose: bool = True,
    draft_min_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    with_sha256: bool = True,
    max_decode_bytes: int | None = None,
) -> Decoded:
    """Decode ``source`` into an 8-bit ``mode`` ("RGB" or "L") image.

    ``with_sha256=False`` skips hashing the file bytes when the caller does not keep them.

    ``draft_min_side``: allow a JPEG DCT-domain downscale keeping both sides >= this (fast
    path; None = full resolution, as exact hashing needs).

    ``max_decode_bytes``: memory the decode may take (default :func:`max_decode_budget`). A
    JPEG that needs more is DCT-downscaled (1/2, 1/4, 1/8) until it fits -- then even exact
    mode hashes the smaller picture, and ``Decoded.full_size`` says so; any other
    file that needs more is refused (ImageError "too large") before its pixels are decoded.
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
    budget = max_decode_budget() if max_decode_bytes is None else int(max_decode_bytes)
    if isinstance(source, Image.Image):
        image = _oriented(source, describe(source), exif_transpose)
        return Decoded(to_mode(image, mode), "<PIL image>", None, source.size, None, None)
    if isinstance(source, np.ndarray):
        image = array_to_image(source)
        return Decoded(to_mode(image, mode), "<array>", None, image.size, None, None)

    data, name = read_bytes(source, max_bytes)
    if draft_min_side and mode == "L" and data[:3] == b"\xff\xd8\xff":
        lean = _lean_jpeg_grey(data, name, draft_min_side, max_pixels, exif_transpose)
        if lean is not None:
            image, original_size, full_size = lean
            return Decoded(image, name, "JPEG", original_size,
                           hashlib.sha256(data).hexdigest() if with_sha256 else None, len(data),
                           full_size)
    image = _open_checked(data, name, max_pixels)
    original_size = image.size
    image_format = image.format
    try:
        if image_format == "JPEG":
            _check_jpeg_has_its_data(data, name, *original_size)
            # Asking for "L" makes libjpeg return the Y channel alone: PDQ's luma, for free.
            draft_mode = "L" if mode == "L" else "RGB"
            scale = _jpeg_scale(image, draft_mode, draft_min_side, budget)
            if scale is None:
                _refuse_over_budget(name, image, mode, budget)
            width, height = original_size
            if scale > _jpeg_scale(image, draft_mode, draft_min_side, None):
                image.draft(draft_mode, (width // scale, height // scale))  # to fit the budget
            elif draft_min_side:  # the fast path's own draft (it also picks the Y channel)
                image.draft(draft_mode, (draft_min_side, draft_min_side))
        if _decode_cost(image.mode, mode, *image.size, image.info) > budget:
            _refuse_over_budget(name, image, mode, budget)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own max_pixels rules
            image.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, "too large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(name, _load_failure_reason(exc), str(exc)) from None
    except MemoryError:
        raise ImageError(name, "too large", "out of memory while decoding") from None
    drafted_size = image.size
    image = _oriented(image, name, exif_transpose)
    try:
        converted = to_mode(image, mode)
    except (OSError, ValueError) as exc:
        raise ImageError(name, "unsupported image mode", str(exc)) from None
    full_size = None
    if drafted_size != original_size:
        # Hashers that filter at the full resolution's scale (fast PDQ) need to know it.
        turned = image.size != drafted_size
        width, height = original_size
        full_size = (height, width) if turned else (width, height)
    return Decoded(
        converted,
        name,
        image_format,
        original_size,
        hashlib.sha256(data).hexdigest() if with_sha256 else None,
        len(data),
        full_size,
    )


def load_image(source, **options) -> Image.Image:
    """Just the decoded PIL image of :func:`decode` (same options)."""
    return decode(source, **options).image


def _open_checked(data: bytes, name: str, max_pixels: int) -> Image.Image:
    head = data[:64].lstrip()
    for magic, reason in _KNOWN_UNSUPPORTED:
        if head.startswith(magic):
            raise ImageError(name, reason)
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc"):
        raise ImageError(name, "unsupported format: HEIC/HEIF")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own max_pixels rules
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(name, "not an image", "unrecognised file format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(name, "too large", str(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(name, _load_failure_reason(exc), str(exc)) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(name, "corrupt", f"invalid size {width}x{height}")
    _check_pixels(name, width, height, max_pixels)
    # Animated GIF/WebP/APNG: Image.open leaves the file on its first frame, which stands for
    # the file. Do not ask for n_frames: it parses every later frame (a hostile file can hold
    # millions, or broken ones that raise IndexError/TypeError outside any error handling).
    return image


def max_decode_budget() -> int:
    """Bytes one decode may take: ``HASHMATCH_MAX_DECODE_MB`` (MiB) if set, else
    DEFAULT_MAX_DECODE_BYTES (512 MiB)."""
    text = os.environ.get(MAX_DECODE_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DECODE_BYTES
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = float("nan")
    if not megabytes > 0 or megabytes == float("inf"):
        raise ValueError(f"{MAX_DECODE_ENV}={text!r}: a positive number of MiB is expected")
    return int(megabytes * 1024 * 1024)


# Bytes per pixel of a Pillow image in memory, by mode (Pillow keeps LA, PA, RGB ... in 4).
_STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
_OUT_BYTES = {"RGB": 4, "L": 1}


def _decode_cost(stored_mode: str, out_mode: str, width: int, height: int, info=None) -> int:
    """Bytes a decode of a ``width`` x ``height`` image of ``stored_mode`` into ``out_mode``
    holds at its peak: the decoded pixels plus what to_mode allocates on the way."""
    stored = _STORED_BYTES.get(stored_mode, 4)
    out = _OUT_BYTES[out_mode]
    if stored_mode == out_mode:
        extra = 0
    elif stored_mode in ("I", "F"):
        extra = 8 + 8 + 1 + out  # float64 copy, scaled float64, uint8 grey, then the output
    elif stored_mode.startswith("I;16"):
        extra = 2 + 1 + out
    elif stored_mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
            stored_mode == "P" and info and "transparency" in info):
        extra = 4 + 4 + 4 + out  # RGBA copy, white, composite, then the output
    else:
        extra = out + (4 if out_mode == "L" and stored_mode != "RGB" else 0)
    return width * height * (stored + extra)


def _refuse_over_budget(name: str, image: Image.Image, mode: str, budget: int) -> None:
    width, height = image.size
    need = _decode_cost(image.mode, mode, width, height, image.info)
    raise ImageError(
        name, "too large",
        f"{width}x{height} {image.mode} needs about {need / 2**20:.0f} MB to decode > limit "
        f"{budget / 2**20:.0f} MB (max_decode_bytes, or {MAX_DECODE_ENV})")


def _jpeg_scale(image: Image.Image, draft_mode: str, draft_min_side: int | None,
                budget: int | None) -> int | None:
    """The DCT scale (1, 2, 4, 8) to decode a JPEG at: the fast path's, or larger when the
    picture would not fit the budget; None when even 1/8 does not fit. ``budget=None``: the
    fast path's scale alone."""
    width, height = image.size
    scale = 1
    if draft_min_side:  # JpegImageFile.draft's choice for (min_side, min_side)
        ratio = min(width // draft_min_side, height // draft_min_side)
        scale = next(s for s in (8, 4, 2, 1) if ratio >= s or s == 1)
    # What draft() will give: the Y channel alone ("L") for grey or YCbCr files, else RGB.
    stored = "L" if image.mode == "L" or (draft_mode == "L" and image.mode == "RGB") else \
        image.mode
    if budget is None:
        return scale
    for candidate in (1, 2, 4, 8):
        if candidate < scale:
            continue
        size = (-(-width // candidate), -(-height // candidate))
        if _decode_cost(stored, draft_mode, *size) <= budget:
            return candidate
    return None


# Huffman-coded JPEGs (baseline, extended, progressive) spend at least one bit on every 8x8
# luma block (its DC code in the first scan), so a file holds at least blocks / 8 bytes.
# Arithmetic-coded ones (SOF9-SOF15) can be smaller and are not checked.
_HUFFMAN_SOF = (0xC0, 0xC1, 0xC2, 0xC3)


def _check_jpeg_has_its_data(data: bytes, name: str, width: int, height: int) -> None:
    """A forged frame size over a few hundred bytes of scan data is a truncated file:
    libjpeg would fill the missing blocks with grey and Pillow would return that."""
    marker = _jpeg_sof_marker(data)
    if marker not in _HUFFMAN_SOF:
        return
    blocks = -(-width // 8) * -(-height // 8)
    if len(data) * 8 < blocks:
        raise ImageError(name, "truncated",
                         f"a {width}x{height} JPEG needs at least {blocks // 8} bytes of image "
                         f"data, the file has {len(data)} bytes")


def _jpeg_sof_marker(data: bytes) -> int | None:
    """The frame marker (0xC0 baseline, 0xC2 progressive, ...) of a JPEG, or None."""
    pos, end = 2, len(data)
    while pos + 4 <= end and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return marker
        if marker in (0xDA, 0xD9):
            return None
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def _check_pixels(name: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            name, "too large", f"{width}x{height} = {width * height} pixels > limit {max_pixels}"
        )


# -- lean JPEG path ------------------------------------------------------------------------
# Pillow's exif_transpose, by orientation value; other values leave the picture as stored.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(="|>)([0-9])')  # as Image.getexif reads XMP
_LEAN_COLOURSPACES = ("Gray", "YCbCr")  # libjpeg hands out their Y channel as is


def _lean_jpeg_grey(data: bytes, name: str, min_side: int, max_pixels: int,
                    exif_transpose: bool):
    """(mode "L" image, stored size) of a JPEG's Y channel, DCT-scaled as Pillow's
    ``draft("L", (min_side, min_side))`` would, or None to leave the file to Pillow.

    Limits are checked on the header before any pixel is decoded. Orientation follows
    Pillow's ``getexif`` (first EXIF block's IFD0 tag, else XMP ``tiff:Orientation``);
    files whose metadata this does not read exactly as Pillow does go to Pillow.
    """
    if _simplejpeg is None:
        return None
    orientation = _jpeg_orientation(data) if exif_transpose else 1
    if orientation is None:
        return None
    try:
        height, width, colourspace, _ = _simplejpeg.decode_jpeg_header(data)
    except Exception:  # noqa: BLE001 - whatever it is, Pillow names it
        return None
    if colourspace not in _LEAN_COLOURSPACES or width <= 0 or height <= 0:
        return None
    _check_pixels(name, width, height, max_pixels)
    # JpegImageFile.draft's choice: the largest of 8, 4, 2, 1 not above min(w // s, h // s).
    ratio = min(width // min_side, height // min_side)
    scale = next(s for s in (8, 4, 2, 1) if ratio >= s or s == 1)
    out_w, out_h = -(-width // scale), -(-height // scale)
    try:
        # strict: a libjpeg warning (premature end, corrupt data) raises; Pillow then decides.
        pixels = _simplejpeg.decode_jpeg(data, "GRAY", min_height=out_h, min_width=out_w,
                                         strict=True)
    except Exception:  # noqa: BLE001 - MemoryError included: Pillow words the failure
        return None
    if pixels.shape != (out_h, out_w, 1):
        return None
    image = Image.frombuffer("L", (out_w, out_h), pixels, "raw", "L", 0, 1)
    method = _TRANSPOSE.get(orientation)
    if method is not None:
        image = image.transpose(method)
    full_size = None
    if scale > 1:
        turned = method in (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270,
                            Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90)
        full_size = (height, width) if turned else (width, height)
    return image, (width, height), full_size


def _jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation Pillow would see in a JPEG (1 if none), or None when the file
    has metadata this reader does not handle exactly as Pillow: MPO (Pillow reports it as
    another format), several EXIF blocks (Pillow concatenates them), a malformed block."""
    pos, end = 2, len(data)
    exif = xmp = None
    while True:
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the metadata is all behind us
            break
        if marker == 0x01 or 0xD0 <= marker <= 0xD9:
            return None
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        if marker == 0xE1:
            segment = data[pos + 4:pos + 2 + length]
            if segment.startswith(b"Exif\0\0"):
                if exif is not None:
                    return None
                exif = segment
            elif segment.startswith(b"http://ns.adobe.com/xap/1.0/\x00"):
                xmp = segment.split(b"\x00", 1)[1]
        elif marker == 0xE2 and data.startswith(b"MPF\0", pos + 4):
            return None
        pos += 2 + length
    orientation = None
    if exif is not None:
        orientation = _exif_ifd0_orientation(exif[6:])
        if orientation is False:
            return None
    if orientation is None and xmp:
        match = _XMP_ORIENTATION.search(xmp)
        if match:
            orientation = int(match[2])
    return 1 if orientation is None else orientation


def _exif_ifd0_orientation(tiff: bytes):
    """Tag 0x0112 of a TIFF block's first IFD: its value, None if absent, False if the block
    is not one this reader understands (Pillow's reading then decides)."""
    if tiff[:4] == b"II*\x00":
        order = "<"
    elif tiff[:4] == b"MM\x00*":
        order = ">"
    else:
        return False
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        found = []
        for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, values = struct.unpack_from(order + "HHI", tiff, entry)
            if tag == ORIENTATION_TAG:
                if kind != 3 or values != 1:  # not one SHORT
                    return False
                found.append(struct.unpack_from(order + "H", tiff, entry + 8)[0])
    except struct.error:
        return False
    if len(found) > 1:
        return False
    return found[0] if found else None


def _load_failure_reason(exc: BaseException) -> str:
    text = str(exc).lower()
    if "truncated" in text or isinstance(exc, EOFError) or "premature end" in text:
        return "truncated"
    if "decoder" in text and "not available" in text:
        return "unsupported format"
    return "corrupt"


def _oriented(image: Image.Image, name: str, exif_transpose: bool) -> Image.Image:
    if not exif_transpose:
        return image
    try:
        # exif_transpose copies the whole image even when there is nothing to turn (36 MB for
        # a 12 Mpx photo): ask for the tag first.
        if image.getexif().get(ORIENTATION_TAG, 1) == 1:
            return image
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the picture
        # Orientation is advisory metadata; the pixels are still good. Hash them upright-as-stored.
        return image


def array_to_image(array: np.ndarray) -> Image.Image:
    """A PIL image from an HxW (grey) or HxWx3/4 (RGB/RGBA) array of uint8 (or floats in 0..1)."""
    arr = np.asarray(array)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError("<array>", "unsupported array shape", str(arr.shape))
    if arr.size == 0:
        raise ImageError("<array>", "empty image", str(arr.shape))
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and np.nanmax(arr) <= 1.0:
            arr = np.nan_to_num(arr) * 255.0
        arr = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    arr = np.ascontiguousarray(arr)
    if arr.ndim == 2:
        return Image.fromarray(arr, "L")
    return Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB")


def to_mode(image: Image.Image, mode: str = "RGB") -> Image.Image:
    """Any Pillow image as 8-bit ``mode`` ("RGB" or "L"), transparency composited on white."""
    image = _to_8bit(image)
    if image.mode in ("La", "RGBa"):
        # Premultiplied alpha: over white, a pixel is colour_premultiplied + (255 - alpha).
        arr = np.asarray(image, dtype=np.int32)
        over_white = arr[..., :-1] + (255 - arr[..., -1:])
        image = Image.fromarray(np.clip(over_white, 0, 255).astype(np.uint8).squeeze(),
                                "L" if image.mode == "La" else "RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == mode:
        return image
    if mode == "L" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image.convert(mode)


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    return image.mode == "P" and "transparency" in image.info


def _to_8bit(image: Image.Image) -> Image.Image:
    """16/32-bit integer and float images rescaled to 0..255 (Pillow's convert would clip)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(image, dtype=np.uint16)
        return Image.fromarray((arr >> 8).astype(np.uint8), "L")
    if image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size == 0:
            return Image.new("L", image.size, 0)
        low, high = float(finite.min()), float(finite.max())
        if low >= 0 and high <= 255:
            scaled = arr  # already 8-bit range (e.g. an L image converted to I or F)
        elif low >= 0 and high <= 65535:
            scaled = arr / 257.0  # 16-bit data stored as I (as 16-bit PNGs open)
        elif low == high:
            # One value outside 0..65535 (e.g. -5.0 everywhere): no range to stretch (it
            # divided by zero); a constant picture is constant grey.
            return Image.new("L", image.size, 128)
        else:
            scaled = (arr - low) * (255.0 / (high - low))
        return Image.fromarray(np.clip(np.nan_to_num(np.rint(scaled)), 0, 255).astype(np.uint8), "L")
    return image
