"""phash, dhash and ahash, bit-identical to imagehash 4.3 in exact mode.

Exact mode performs imagehash's own steps on the same PIL image (``convert('L')``, LANCZOS
resize, scipy's DCT for phash), so stored imagehash hex strings and these fingerprints are
interchangeable. Fast mode first shrinks the image with Pillow's C box filter
(``Image.reduce``) to a few times the hash grid, so the LANCZOS resize has little left to do;
its drift against exact mode is measured in benchmarks/RESULTS.md.

Fast phash skips Pillow's resize and scipy altogether: the LANCZOS resize (without its
8-bit rounding between and after the passes) and the low-frequency corner of the DCT are
both linear, so ``low = (D K_rows) . pixels . (D K_cols)^T`` with K Pillow's own LANCZOS
weights and D the first ``hash_size`` rows of scipy's DCT-II matrix: one pass over the uint8
pixels (``_imagecore.separable_product``) with weights cached per axis length
(``_lanczos_dct``).

Deliberate difference from imagehash: images with transparency are composited on white by
:mod:`hashmatch.decode` before hashing (imagehash drops alpha, so transparent areas hash as
whatever colour the invisible pixels happen to hold).
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from .. import _imagecore
from ..errors import HashFormatError
from ..fingerprint import Fingerprint

LANCZOS = Image.Resampling.LANCZOS

# Fast mode: JPEGs are draft-decoded keeping both sides >= FAST_MIN_SIDE, then Pillow's C box
# filter (Image.reduce) shrinks to no less than FAST_OVERSAMPLING pixels per hash-grid pixel,
# so the LANCZOS resize (a 3-lobe kernel: 0.8 ms on a 400x500 photo, 2x imagehash's whole
# decode) only has a small image left. Measured drift in benchmarks/RESULTS.md.
FAST_OVERSAMPLING = 4
FAST_MIN_SIDE = 64


def _check_hash_size(hash_size: int) -> None:
    if hash_size < 8 or (hash_size * hash_size) % 64:
        raise HashFormatError(
            f"hash_size must be a multiple of 8 (so the hash is whole 64-bit words), got {hash_size}"
        )


def _grey_reduced(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Fast mode's grey image, box-reduced to no less than FAST_OVERSAMPLING x ``size``."""
    grey = image if image.mode == "L" else image.convert("L")
    factor = min(grey.width // (size[0] * FAST_OVERSAMPLING), grey.height // (size[1] * FAST_OVERSAMPLING))
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


@functools.lru_cache(maxsize=1024)
def _lanczos_dct(n_in: int, side: int, hash_size: int) -> np.ndarray:
    """(hash_size x n_in) float32: the first hash_size rows of scipy's unnormalised DCT-II
    of length ``side`` times the LANCZOS resize n_in -> side."""
    k = np.arange(hash_size)[:, None]
    n = np.arange(side)[None, :]
    dct = 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * side))
    return (dct @ lanczos_weights(n_in, side)).astype(np.float32)


def _fast_phash_low(image: Image.Image, hash_size: int, side: int) -> np.ndarray:
    grey = _grey_reduced(image, (side, side))
    pixels = _imagecore.grey_pixels(grey)
    if pixels is None:
        pixels = np.asarray(grey)
    height, width = pixels.shape
    return _imagecore.separable_product(
        pixels, _lanczos_dct(height, side, hash_size), _lanczos_dct(width, side, hash_size))


def phash(image: Image.Image, hash_size: int = 8, highfreq_factor: int = 4, *, exact: bool = True) -> Fingerprint:
    """imagehash.phash: DCT of a 32x32 grey image, low 8x8 frequencies above their median."""
    _check_hash_size(hash_size)
    side = hash_size * highfreq_factor
    if not exact:
        return Fingerprint("phash", _imagecore.above_median_bits(_fast_phash_low(image, hash_size, side)))
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
