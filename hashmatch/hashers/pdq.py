"""PDQ, Meta's 256-bit perceptual hash: exact (bit-identical to the C++ reference) and fast.

Exact mode reproduces ``pdqhash.compute`` / ``pdqhash.compute_dihedral`` on the same array,
hash and quality: luma as pdqhash computes it (float64 ``R*0.299 + G*0.587 + B*0.114``
cast to float32), two Jarosz box-filter passes, decimation to 64x64, the gradient quality
metric, the 16x16 corner of the DCT, and one bit per coefficient above the median. The
float loops live in ``hashmatch._imagecore`` (Cython, GIL released) and are specified by
their numpy twins in ``hashmatch._imagecore_ref``.

Fast mode computes the same float pipeline a cheaper way: the blur is linear and
separable and PDQ reads it at 64x64 points only, so blur + decimation is one sparse
64 x n matrix per axis, applied straight to the uint8 pixels (``_imagecore.pdq_fast_dct16``,
about one multiply-add per input pixel instead of a float luma image and four box passes).
Its 64x64 values equal exact mode's up to float rounding (summation order), so on the
same pixels the hash almost always equals the exact one bit for bit. Fast file hashing
also lets decode shrink JPEGs in the DCT domain (draft) while both sides stay
>= ``FAST_MIN_SIDE``, and asks for the JPEG's own Y channel; that, not the arithmetic,
is where fast mode's drift comes from (benchmarks/RESULTS.md, "PDQ fast-mode drift").

Reference quirks kept on purpose:
- images with a side below 5 px hash to all zeros with quality 0;
- a 64x64 image skips the blur in the single-hash path but not in the dihedral path, so
  ``pdq_dihedral_from_rgb(x)[0][0]`` may differ from ``pdq_from_rgb(x)[0]`` at 64x64.
"""
from __future__ import annotations

import functools
import threading

import numpy as np
from PIL import Image

from .. import _imagecore
from ..fingerprint import Fingerprint

MIN_HASHABLE_SIDE = 5
HASH_BYTES = 32
DIHEDRAL_NAMES = _imagecore.DIHEDRAL_NAMES  # order of the dihedral hashes
# The same eight as they are named in the API (Match.query_variant, the store's variant column).
VARIANT_NAMES = ("original", "rot90", "rot180", "rot270", "flipx", "flipy", "flipplus1",
                 "flipminus1")
MIRROR = VARIANT_NAMES.index("flipy")  # left-right flip, the commonest re-post flip
# Each variant as the PIL transpose that turns the image the same way (None: as is); the
# index hashes other algorithms' variants with it, verification turns query pixels with it.
PIL_TRANSPOSE = {
    "original": None,
    "rot90": Image.Transpose.ROTATE_90,
    "rot180": Image.Transpose.ROTATE_180,
    "rot270": Image.Transpose.ROTATE_270,
    "flipx": Image.Transpose.FLIP_TOP_BOTTOM,
    "flipy": Image.Transpose.FLIP_LEFT_RIGHT,
    "flipplus1": Image.Transpose.TRANSPOSE,
    "flipminus1": Image.Transpose.TRANSVERSE,
}

# Fast file hashing lets decode draft JPEGs down while both sides stay >= this many pixels;
# the blur is then done at the full resolution's scale (_drafted_axis_weights). Chosen from
# the drift/speed measurements in benchmarks/RESULTS.md: 240 lets a 640x480 photo decode at
# half size with corpus drift p99 6 / max 8 bits (384 without folding: p99 4 / max 8, but
# no draft below 768 px; 256 without folding: p99 16 / max 22).
FAST_MIN_SIDE = 240


# -- arrays -> hashes --------------------------------------------------------------------
def pdq_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """(packed uint8[32] hash, quality) of an 8-bit image array, exactly as pdqhash.compute.

    ``rgb`` is HxWx3 uint8 (any strides); HxWx4 is accepted and its 4th channel ignored
    (composite alpha first if it matters); HxW uint8 is grey, whose luma is the grey value
    itself -- the same luma pdqhash gives the RGB image (g, g, g).
    """
    return _hash_luma(*_luma_in_workspace(rgb), dihedral=False)


def pdq_dihedral_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """(uint8[8, 32] hashes, quality) as pdqhash.compute_dihedral, in DIHEDRAL_NAMES order."""
    return _hash_luma(*_luma_in_workspace(rgb), dihedral=True)


def pdq_from_luma(luma: np.ndarray) -> tuple[np.ndarray, int]:
    """Hash of a 2-D luma image (cast to float32 into a private buffer; input untouched)."""
    return _hash_luma(*_copy_to_workspace(luma), dihedral=False)


def pdq_dihedral_from_luma(luma: np.ndarray) -> tuple[np.ndarray, int]:
    return _hash_luma(*_copy_to_workspace(luma), dihedral=True)


def luma_of(image: np.ndarray) -> np.ndarray:
    """A new float32 luma array of an HxW, HxWx3 or HxWx4 uint8 array (pdqhash's luma)."""
    array = _check_image_array(image)
    luma = np.empty(array.shape[:2], dtype=np.float32)
    _fill_luma(array, luma)
    return luma


def _check_image_array(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"PDQ needs an 8-bit image array, got dtype {array.dtype}")
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise ValueError(f"PDQ needs an HxW, HxWx3 or HxWx4 array, got shape {array.shape}")
    return array


def _fill_luma(array: np.ndarray, luma: np.ndarray) -> None:
    if array.ndim == 2:
        _imagecore.luma_from_grey(array, luma)
    else:
        _imagecore.luma_from_rgb(array, luma)


class _Workspace(threading.local):
    """Two float32 image buffers per thread, reused from call to call.

    Fresh multi-megabyte arrays come straight from mmap, and first-touch page faults cost
    more than the whole PDQ computation of a small image; reusing the buffers avoids them.
    Buffers above KEEP_LIMIT floats are not kept (no thread pins 100+ MB after one photo).
    """

    KEEP_LIMIT = 4_000_000

    def __init__(self):
        self.flat = np.empty(0, np.float32)
        self.lines = np.empty(0, np.float32)

    def pair(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        size = shape[0] * shape[1]
        if size > self.KEEP_LIMIT:
            flat = np.empty(2 * size, np.float32)
        else:
            if self.flat.size < 2 * size:
                self.flat = np.empty(2 * size, np.float32)
            flat = self.flat
        return flat[:size].reshape(shape), flat[size : 2 * size].reshape(shape)

    def line_buffer(self, size: int) -> np.ndarray:
        """A float32 buffer of at least ``size`` floats (fast mode's 64-row stage)."""
        if size > self.KEEP_LIMIT:
            return np.empty(size, np.float32)
        if self.lines.size < size:
            self.lines = np.empty(size, np.float32)
        return self.lines


_workspace = _Workspace()


def _luma_in_workspace(image) -> tuple[np.ndarray, np.ndarray]:
    array = _check_image_array(image)
    luma, scratch = _workspace.pair(array.shape[:2])
    _fill_luma(array, luma)
    return luma, scratch


def _copy_to_workspace(luma) -> tuple[np.ndarray, np.ndarray]:
    source = np.asarray(luma)
    if source.ndim != 2:
        raise ValueError(f"luma must be 2-D, got shape {source.shape}")
    buffer, scratch = _workspace.pair(source.shape)
    np.copyto(buffer, source, casting="same_kind")
    return buffer, scratch


def _hash_luma(luma: np.ndarray, scratch: np.ndarray, *, dihedral: bool) -> tuple[np.ndarray, int]:
    """Hash a float32 luma buffer (overwritten: the blur runs in place)."""
    if min(luma.shape) < MIN_HASHABLE_SIDE:
        shape = (len(DIHEDRAL_NAMES), HASH_BYTES) if dihedral else (HASH_BYTES,)
        return np.zeros(shape, dtype=np.uint8), 0
    # The reference's dihedral path blurs even a 64x64 input; its single-hash path does not.
    dct16, quality = _imagecore.pdq_dct16_inplace(luma, scratch, dihedral)
    if dihedral:
        return _imagecore.dihedral_bits_from_dct16(dct16), quality
    return _imagecore.bits_from_dct16(dct16), quality


# -- images -> Fingerprints ---------------------------------------------------------------
def pdq_hash_image(
    image: Image.Image | np.ndarray, *, exact: bool = True, dihedral: bool = False,
    full_size: tuple[int, int] | None = None,
) -> Fingerprint | list[Fingerprint]:
    """PDQ Fingerprint of a PIL image or uint8 array (list of 8 when ``dihedral``).

    ``exact=True``: the hash pdqhash.compute gives ``np.asarray(image.convert("RGB"))``
    (arrays as in ``pdq_from_rgb``). ``exact=False``: the same pipeline with the blur and
    decimation done as sparse matrix products (``pdq_fast_from_rgb``): equal to exact mode
    up to float rounding, at a fraction of its cost. "L" images are hashed from their grey
    values without an RGB round trip. Mode conversions that need choices (alpha, EXIF
    orientation) are decode's job, not this function's. ``full_size`` (fast mode): the
    (width, height) ``image`` has at full resolution when it is a DCT-domain downscale
    (:attr:`hashmatch.decode.Decoded.full_size`); the blur is then sized for that scale.
    """
    array = _as_array(image)
    if exact:
        bits, quality = _hash_luma(*_luma_in_workspace(array), dihedral=dihedral)
    else:
        bits, quality = _hash_fast(array, dihedral=dihedral, full_size=full_size)
    if dihedral:
        return [Fingerprint("pdq", variant, quality) for variant in bits]
    return Fingerprint("pdq", bits, quality)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    shared = _imagecore.grey_pixels(image)  # no copy for grey images: the fast path's input
    return shared if shared is not None else np.asarray(image)


# -- fast mode --------------------------------------------------------------------------------
def pdq_fast_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    """(packed hash, quality) of fast mode on an array (same inputs as ``pdq_from_rgb``).

    The Jarosz blur is linear and separable and PDQ only reads it at 64x64 points, so along
    each axis it is one sparse 64 x n matrix K (``_imagecore.fast_axis_weights``) and the
    downsample is K_rows . luma . K_cols^T, computed straight from the uint8 pixels. Same
    quality, DCT, median and bits as exact mode; the 64x64 values differ from exact ones by
    float rounding only (about 1e-4 of a grey level), so hashes almost always agree bit for
    bit (benchmarks/RESULTS.md, "PDQ fast-mode drift").
    """
    return _hash_fast(_check_image_array(rgb), dihedral=False)


def pdq_fast_dihedral_from_rgb(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    return _hash_fast(_check_image_array(rgb), dihedral=True)


# Query-time alignment hashes boxes of many sizes (regions.Aligner): ~30 lengths a query.
@functools.lru_cache(maxsize=1024)
def _axis_weights(length: int, blur: bool = True):
    return _imagecore.fast_axis_weights(length, blur)


@functools.lru_cache(maxsize=64)
def _drafted_axis_weights(length: int, full_length: int):
    """Weights for an axis that a JPEG draft shrank from ``full_length`` to ``length``.

    The full-resolution blur + decimation (PDQ's Jarosz windows are sized from the true
    image) folded onto the drafted pixels: a drafted pixel is (about) the mean of the
    ``full_length / length`` full pixels it covers, so each full-resolution weight moves to
    the drafted pixel that holds its pixel. Filtering the small image with windows sized
    for it instead rounds the windows up and moves the hash by up to ~16 bits at p99.
    """
    starts, lens, weights, _ = _axis_weights(full_length, True)
    scale = full_length / length
    rows = []
    for start, count, row in zip(starts, lens, weights):
        columns = np.minimum(((start + np.arange(count)) / scale).astype(np.int64), length - 1)
        folded = np.bincount(columns - columns[0], weights=row[:count].astype(np.float64))
        rows.append((int(columns[0]), folded))
    width = max(len(folded) for _, folded in rows)
    new_starts = np.array([first for first, _ in rows], np.int32)
    new_lens = np.array([len(folded) for _, folded in rows], np.int32)
    new_weights = np.zeros((64, width), np.float32)
    for o, (_, folded) in enumerate(rows):
        new_weights[o, :len(folded)] = folded
    return new_starts, new_lens, new_weights, length


def _hash_fast(image, *, dihedral: bool, full_size=None) -> tuple[np.ndarray, int]:
    array = _check_image_array(image)
    rows, cols = array.shape[:2]
    if min(rows, cols) < MIN_HASHABLE_SIDE:
        shape = (len(DIHEDRAL_NAMES), HASH_BYTES) if dihedral else (HASH_BYTES,)
        return np.zeros(shape, dtype=np.uint8), 0
    channels = 1 if array.ndim == 2 else array.shape[2]
    pixel = array.itemsize * channels
    if array.strides[-1] != array.itemsize or (array.ndim == 3 and array.strides[1] != pixel):
        array = np.ascontiguousarray(array)  # the kernel wants each row's pixels packed
    blur = dihedral or rows != 64 or cols != 64  # the reference's unfiltered 64x64 path
    row_weights, col_weights = _axis_weights(rows, blur), _axis_weights(cols, blur)
    if full_size is not None and (full_size[1], full_size[0]) != (rows, cols):
        row_weights = _drafted_axis_weights(rows, full_size[1])
        col_weights = _drafted_axis_weights(cols, full_size[0])
    dct16, quality = _imagecore.pdq_fast_dct16(
        array, row_weights, col_weights,
        _workspace.line_buffer((64 + channels) * cols))
    if dihedral:
        return _imagecore.dihedral_bits_from_dct16(dct16), quality
    return _imagecore.bits_from_dct16(dct16), quality


def pdq_hash_boxes(pixels: np.ndarray, boxes) -> list[Fingerprint]:
    """Fast-mode PDQ Fingerprints of boxes ``(left, top, right, bottom)`` of one uint8 array.

    The same, bit for bit, as ``[pdq_hash_image(pixels[t:b, l:r], exact=False) for l, t, r,
    b in boxes]`` (numpy slice semantics, tiny boxes -> zero hash, quality 0), but boxes
    with the same rows share one row stage: column j of the fast path's row stage depends
    on column j of the pixels only, so the stage over the band of rows, from the leftmost
    to the rightmost column of those boxes, is sliced to each box's columns
    (``_imagecore.pdq_fast_dct16_from_rows``). A region's crop windows cut from the left or
    right span the region's full height: one row stage serves them all. An array carries
    no draft record: each box is blurred at its own (array) scale.
    """
    array = _check_image_array(pixels)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.strides[-1] != 1 or (array.ndim == 3 and array.strides[1] != channels):
        array = np.ascontiguousarray(array)  # the kernels want each row's pixels packed
    out: list = [None] * len(boxes)
    bands: dict[tuple[int, int, bool], list[tuple[int, int, int]]] = {}
    for i, (l, t, r, b) in enumerate(boxes):
        top, bottom, _ = slice(t, b).indices(height)
        left, right, _ = slice(l, r).indices(width)
        rows, cols = bottom - top, right - left
        if min(rows, cols) < MIN_HASHABLE_SIDE:
            out[i] = Fingerprint("pdq", np.zeros(HASH_BYTES, dtype=np.uint8), 0)
            continue
        blur = rows != 64 or cols != 64  # as _hash_fast: the reference's unfiltered 64x64
        bands.setdefault((top, bottom, blur), []).append((i, left, right))
    for (top, bottom, blur), members in bands.items():
        first = min(left for _, left, _ in members)
        last = max(right for _, _, right in members)
        rows64 = _imagecore.pdq_fast_rows(
            array[top:bottom, first:last], _axis_weights(bottom - top, blur),
            _workspace.line_buffer((64 + channels) * (last - first)))
        for i, left, right in members:
            dct16, quality = _imagecore.pdq_fast_dct16_from_rows(
                rows64[:, left - first:right - first], _axis_weights(right - left, blur))
            out[i] = Fingerprint("pdq", _imagecore.bits_from_dct16(dct16), quality)
    return out


# -- hash-only dihedral variants ---------------------------------------------------------------
def dihedral_from_hash(codes: np.ndarray) -> np.ndarray:
    """(n, 8, 32) approximate dihedral variants of packed PDQ codes, without the image.

    A rotation or flip of the image transposes and/or negates parity classes (i % 2, j % 2)
    of the 16x16 DCT (the reference's dct16OriginalTo*); negating a coefficient complements
    its bit. So the variants follow from the bits alone -- up to the median shift that
    negation causes: measured ~7 bits from the true variant on the reference JPEGs
    (benchmarks/RESULTS.md, index section). Order as DIHEDRAL_NAMES. Bit k = 16 i + j of the
    DCT sign matrix is packed (MSB first) at position 255 - k.
    """
    codes = np.asarray(codes, np.uint8).reshape(-1, HASH_BYTES)
    a = np.unpackbits(codes, axis=1)[:, ::-1].reshape(-1, 16, 16)  # a[:, i, j] = bit 16i + j
    i, j = np.indices((16, 16))
    even_i, even_j, odd = (i % 2 == 0), (j % 2 == 0), ((i + j) % 2 == 1)
    t = a.transpose(0, 2, 1)
    # original, rot90, rot180, rot270, flipX, flipY, flipPlus1, flipMinus1
    variants = [a, t ^ even_i, a ^ odd, t ^ even_j, a ^ even_i, a ^ even_j, t, t ^ odd]
    out = np.stack([v.astype(np.uint8).reshape(-1, 256)[:, ::-1] for v in variants], axis=1)
    return np.packbits(out, axis=2)


# -- low-frequency sub-codes -------------------------------------------------------------------
# Bytes of a packed PDQ code holding the signs of the 8x8 lowest-frequency DCT coefficients
# (i, j < 8): bit k = 16 i + j sits in byte 31 - k // 8 at bit k % 8 (LSB first), so row i's
# coefficients j < 8 are exactly byte 31 - 2 i.
LOW_FREQUENCY_BYTES = np.arange(31, 16, -2)


def low_frequency_codes(codes: np.ndarray) -> np.ndarray:
    """(n, 8) uint8: the 64 bits of each packed PDQ code that are the signs of the 8x8
    lowest-frequency DCT coefficients (a[:, :8, :8] in ``dihedral_from_hash``'s terms), as
    one 64-bit code. Coarse structure survives crops and re-framing better than the high
    frequencies, so their Hamming distance is a cheap prefilter for the full code's
    (benchmarks/RESULTS.md, "Query cost at 1M, session 4")."""
    codes = np.asarray(codes, np.uint8).reshape(-1, HASH_BYTES)
    return np.ascontiguousarray(codes[:, LOW_FREQUENCY_BYTES])


def low_frequency_keys(low_codes: np.ndarray) -> np.ndarray:
    """(n,) uint16 from (n, 8) ``low_frequency_codes``: the signs of the 4x4 lowest-frequency
    DCT coefficients (bits 16 i + j of the PDQ code, i, j < 4: the low nibbles of the low
    code's bytes 0-3, i.e. of the PDQ code's bytes 31, 29, 27 and 25), bit 4 i + j of the
    key. The coarsest part of the low-frequency code: its bucket key
    (index.PREFILTER_KEY_RADIUS)."""
    low_codes = np.ascontiguousarray(low_codes, np.uint8).reshape(-1, 8)
    words = low_codes.view("<u4")[:, 0]
    keys = (words & 0xF) | ((words >> 4) & 0xF0) | ((words >> 8) & 0xF00) \
        | ((words >> 12) & 0xF000)
    return keys.astype(np.uint16)
