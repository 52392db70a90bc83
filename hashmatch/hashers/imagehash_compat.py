"""phash, dhash and ahash, bit-identical to imagehash 4.3 in exact mode.

Exact mode performs imagehash's own steps on the same PIL image (``convert('L')``, LANCZOS
resize, scipy's DCT for phash), so stored imagehash hex strings and these fingerprints are
interchangeable. Fast mode differs only in what it resizes from: a JPEG is draft-decoded
(DCT-domain downscale, luma only) keeping both sides >= FAST_MIN_SIDE, other large images are
box-reduced (``Image.reduce``) to no less than that, then imagehash's own LANCZOS resize runs
(its 8-bit rounding between the passes matters: a float resize drifts twice as far), and
phash's DCT corner is one small matrix product. Measured drift against exact mode, 529
images of ../shared/data (benchmarks/phash_fast.py, benchmarks/RESULTS.md), median / p99 /
max bits of 64: phash 0 / 2 / 2, dhash 0 / 2 / 2, ahash 0 / 1 / 5.

Deliberate difference from imagehash: images with transparency are composited on white by
:mod:`hashmatch.decode` before hashing (imagehash drops alpha, so transparent areas hash as
whatever colour the invisible pixels happen to hold).
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ..errors import HashFormatError
from ..fingerprint import Fingerprint

LANCZOS = Image.Resampling.LANCZOS

# Fast mode: JPEGs are draft-decoded keeping both sides >= FAST_MIN_SIDE, larger images of
# other formats box-reduced to no less; then imagehash's LANCZOS resize. 256: p99 drift <= 2
# bits for all three (64 with 4x-grid oversampling, the earlier setting: ahash p99 11, max 25).
FAST_MIN_SIDE = 256


def _check_hash_size(hash_size: int) -> None:
    if hash_size < 8 or (hash_size * hash_size) % 64:
        raise HashFormatError(
            f"hash_size must be a multiple of 8 (so the hash is whole 64-bit words), got {hash_size}"
        )


def _grey_reduced(image: Image.Image, size: tuple[int, int] | None = None) -> Image.Image:
    """Fast mode's grey image, box-reduced to no less than FAST_MIN_SIDE on either side."""
    grey = image if image.mode == "L" else image.convert("L")
    factor = min(grey.width, grey.height) // FAST_MIN_SIDE
    return grey.reduce(factor) if factor >= 2 else grey


def _grey_at(image: Image.Image, size: tuple[int, int], fast: bool) -> np.ndarray:
    if fast:
        grey = _grey_reduced(image, size)
    else:
        grey = image if image.mode == "L" else image.convert("L")
    return np.asarray(grey.resize(size, LANCZOS))


def _lanczos(x: np.ndarray) -> np.ndarray:
    """Pillow's lanczos_filter (Resample.c): sinc(x) sinc(x / 3) on [-3, 3)."""
    return np.where((x >= -3.0) & (x < 3.0), np.sinc(x) * np.sinc(x / 3.0), 0.0)


def lanczos_weights(n_in: int, n_out: int) -> np.ndarray:
    """The n_out x n_in matrix of Pillow's LANCZOS resize along one axis (precompute_coeffs
    in Resample.c, in double, before Pillow turns it into 22-bit fixed point)."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = 3.0 * filter_scale
    centers = (np.arange(n_out) + 0.5) * scale
    first = np.maximum((centers - support + 0.5).astype(np.int64), 0)  # C's (int) truncation
    last = np.minimum((centers + support + 0.5).astype(np.int64), n_in)
    columns = np.arange(n_in)
    inside = (columns[None, :] >= first[:, None]) & (columns[None, :] < last[:, None])
    weights = np.where(inside, _lanczos((columns[None, :] - centers[:, None] + 0.5) / filter_scale), 0.0)
    sums = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, sums, out=np.zeros_like(weights), where=sums != 0)


@functools.lru_cache(maxsize=64)
def _dct_rows(side: int, hash_size: int) -> np.ndarray:
    """The first ``hash_size`` rows of scipy's unnormalised DCT-II of length ``side``."""
    k = np.arange(hash_size)[:, None]
    n = np.arange(side)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * side))


def _fast_phash_low(image: Image.Image, hash_size: int, side: int) -> np.ndarray:
    pixels = np.asarray(_grey_reduced(image).resize((side, side), LANCZOS), dtype=np.float64)
    rows = _dct_rows(side, hash_size)
    return rows @ pixels @ rows.T


def phash(image: Image.Image, hash_size: int = 8, highfreq_factor: int = 4, *,
          exact: bool = True) -> Fingerprint:
    """imagehash.phash: DCT of a 32x32 grey image, low 8x8 frequencies above their median."""
    _check_hash_size(hash_size)
    side = hash_size * highfreq_factor
    if not exact:
        low = _fast_phash_low(image, hash_size, side)
        return Fingerprint.from_bool_array(low > np.median(low), "phash")
    import scipy.fftpack  # imported here: it costs ~0.3 s, and most runs never need it

    pixels = _grey_at(image, (side, side), fast=False)
    dct = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)
    low = dct[:hash_size, :hash_size]
    return Fingerprint.from_bool_array(low > np.median(low), "phash")


def dhash(image: Image.Image, hash_size: int = 8, *, exact: bool = True) -> Fingerprint:
    """imagehash.dhash: is each pixel brighter than its left neighbour, on a 9x8 grey image."""
    _check_hash_size(hash_size)
    pixels = _grey_at(image, (hash_size + 1, hash_size), fast=not exact)
    return Fingerprint.from_bool_array(pixels[:, 1:] > pixels[:, :-1], "dhash")


def ahash(image: Image.Image, hash_size: int = 8, *, exact: bool = True) -> Fingerprint:
    """imagehash.average_hash: pixels of an 8x8 grey image above their mean."""
    _check_hash_size(hash_size)
    pixels = _grey_at(image, (hash_size, hash_size), fast=not exact)
    return Fingerprint.from_bool_array(pixels > pixels.mean(), "ahash")
