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

ORIENTATION_TAG = 0x0112
# image.info key: (width, height) the image had before a JPEG draft shrank it, in the final
# orientation. Only set on drafted images.
FULL_SIZE_KEY = "hashmatch.full_size"

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
) -> Decoded:
    """Decode ``source`` into an 8-bit ``mode`` ("RGB" or "L") image.

    ``with_sha256=False`` skips hashing the file bytes when the caller does not keep them.

    ``draft_min_side``: allow a JPEG DCT-domain downscale keeping both sides >= this (fast
    path; None = full resolution, as exact hashing needs).
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', not {mode!r}")
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
            image, original_size = lean
            return Decoded(image, name, "JPEG", original_size,
                           hashlib.sha256(data).hexdigest() if with_sha256 else None, len(data))
    image = _open_checked(data, name, max_pixels)
    original_size = image.size
    image_format = image.format
    try:
        if draft_min_side and image_format == "JPEG":
            # Asking for "L" makes libjpeg return the Y channel alone: PDQ's luma, for free.
            draft_mode = "L" if mode == "L" else "RGB"
            image.draft(draft_mode, (draft_min_side, draft_min_side))
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
    if drafted_size != original_size:
        # Hashers that filter at the full resolution's scale (fast PDQ) need to know it.
        turned = image.size != drafted_size
        width, height = original_size
        converted.info[FULL_SIZE_KEY] = (height, width) if turned else (width, height)
    return Decoded(
        converted,
        name,
        image_format,
        original_size,
        hashlib.sha256(data).hexdigest() if with_sha256 else None,
        len(data),
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
    if scale > 1:
        turned = method in (Image.Transpose.TRANSPOSE, Image.Transpose.ROTATE_270,
                            Image.Transpose.TRANSVERSE, Image.Transpose.ROTATE_90)
        image.info[FULL_SIZE_KEY] = (height, width) if turned else (width, height)
    return image, (width, height)


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
        else:
            scaled = (arr - low) * (255.0 / (high - low))
        return Image.fromarray(np.clip(np.nan_to_num(np.rint(scaled)), 0, 255).astype(np.uint8), "L")
    return image
