"""phash, dhash and ahash, bit-identical to imagehash 4.3 in exact mode.

Exact mode performs imagehash's own steps on the same PIL image (``convert('L')``, LANCZOS
resize, scipy's DCT for phash), so stored imagehash hex strings and these fingerprints are
interchangeable. Fast mode first shrinks the image with Pillow's C box filter
(``Image.reduce``) to a few times the hash grid, so the LANCZOS resize has little left to do;
its drift against exact mode is measured in benchmarks/RESULTS.md.

Deliberate difference from imagehash: images with transparency are composited on white by
:mod:`hashmatch.decode` before hashing (imagehash drops alpha, so transparent areas hash as
whatever colour the invisible pixels happen to hold).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

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


def _grey_at(image: Image.Image, size: tuple[int, int], fast: bool) -> np.ndarray:
    grey = image if image.mode == "L" else image.convert("L")
    if fast:
        factor = min(grey.width // (size[0] * FAST_OVERSAMPLING), grey.height // (size[1] * FAST_OVERSAMPLING))
        if factor >= 2:
            grey = grey.reduce(factor)
    return np.asarray(grey.resize(size, LANCZOS))


def phash(image: Image.Image, hash_size: int = 8, highfreq_factor: int = 4, *, exact: bool = True) -> Fingerprint:
    """imagehash.phash: DCT of a 32x32 grey image, low 8x8 frequencies above their median."""
    import scipy.fftpack  # imported here: it costs ~0.3 s, and most runs never need it

    _check_hash_size(hash_size)
    side = hash_size * highfreq_factor
    pixels = _grey_at(image, (side, side), fast=not exact)
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
