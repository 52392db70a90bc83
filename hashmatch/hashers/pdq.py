"""PDQ, Meta's 256-bit perceptual hash: exact (bit-identical to the C++ reference) and fast.

Exact mode reproduces ``pdqhash.compute`` / ``pdqhash.compute_dihedral`` on the same array,
hash and quality: luma as pdqhash computes it (float64 ``R*0.299 + G*0.587 + B*0.114``
cast to float32), two Jarosz box-filter passes, decimation to 64x64, the gradient quality
metric, the 16x16 corner of the DCT, and one bit per coefficient above the median. The
float loops live in ``hashmatch._imagecore`` (Cython, GIL released) and are specified by
their numpy twins in ``hashmatch._imagecore_ref``.

Fast mode first shrinks the image so its shorter side stays >= ``FAST_MIN_SIDE`` (the
decoder does the same for JPEG with a DCT-domain draft), then runs the exact pipeline on
the smaller image. PDQ blurs away everything finer than 1/128 of a side anyway, so the hash
barely moves; benchmarks/RESULTS.md ("PDQ fast-mode drift") has the measured drift.

Reference quirks kept on purpose:
- images with a side below 5 px hash to all zeros with quality 0;
- a 64x64 image skips the blur in the single-hash path but not in the dihedral path, so
  ``pdq_dihedral_from_rgb(x)[0][0]`` may differ from ``pdq_from_rgb(x)[0]`` at 64x64.
"""
from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from .. import _imagecore
from ..fingerprint import Fingerprint

MIN_HASHABLE_SIDE = 5
HASH_BYTES = 32
DIHEDRAL_NAMES = _imagecore.DIHEDRAL_NAMES  # order of the dihedral hashes

# Fast mode keeps both sides >= this many pixels (JPEG draft in decode, Image.reduce
# here). Chosen from the drift/speed measurements in benchmarks/RESULTS.md.
FAST_MIN_SIDE = 384


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

    def pair(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        size = shape[0] * shape[1]
        if size > self.KEEP_LIMIT:
            flat = np.empty(2 * size, np.float32)
        else:
            if self.flat.size < 2 * size:
                self.flat = np.empty(2 * size, np.float32)
            flat = self.flat
        return flat[:size].reshape(shape), flat[size : 2 * size].reshape(shape)


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
    image: Image.Image | np.ndarray, *, exact: bool = True, dihedral: bool = False
) -> Fingerprint | list[Fingerprint]:
    """PDQ Fingerprint of a PIL image or uint8 array (list of 8 when ``dihedral``).

    ``exact=True``: the hash pdqhash.compute gives ``np.asarray(image.convert("RGB"))``
    (arrays as in ``pdq_from_rgb``). ``exact=False``: the image is first shrunk with
    Pillow's box reduce to a shorter side >= FAST_MIN_SIDE; "L" images are hashed from
    their grey values without an RGB round trip. Mode conversions that need choices
    (alpha, EXIF orientation) are decode's job, not this function's.
    """
    if not exact:
        image = _shrink_for_fast_mode(image)
    bits, quality = _hash_luma(*_luma_in_workspace(_as_array(image)), dihedral=dihedral)
    if dihedral:
        return [Fingerprint("pdq", variant, quality) for variant in bits]
    return Fingerprint("pdq", bits, quality)


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image
    if image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return np.asarray(image)


def _shrink_for_fast_mode(image: Image.Image | np.ndarray) -> Image.Image | np.ndarray:
    """Box-reduce by the largest integer factor that keeps both sides >= FAST_MIN_SIDE."""
    height, width = image.shape[:2] if isinstance(image, np.ndarray) else image.size[::-1]
    factor = min(height, width) // FAST_MIN_SIDE
    if factor < 2:
        return image
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.ascontiguousarray(image[..., :3] if image.ndim == 3 else image))
    elif image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    return image.reduce(factor)
