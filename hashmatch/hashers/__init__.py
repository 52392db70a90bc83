"""Hash algorithms behind one call: ``compute(image, algorithm, exact=...)``.

Each algorithm lives in its own module (pdq.py, imagehash_compat.py); this module only
dispatches and says what decode each needs, so callers decode once for all of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from ..fingerprint import Fingerprint, check_algorithm
from . import imagehash_compat

DEFAULT_ALGORITHM = "pdq"


@dataclass(frozen=True)
class DecodeNeeds:
    """What a hasher needs from decode: colour or grey, and how far JPEG may be pre-shrunk."""

    mode: str  # "RGB" or "L"
    draft_min_side: int | None  # None: full resolution


def decode_needs(algorithm: str, exact: bool) -> DecodeNeeds:
    check_algorithm(algorithm)
    if exact:
        # Exact modes are defined on the full-resolution RGB array / PIL image.
        return DecodeNeeds("RGB", None)
    if algorithm == "pdq":
        from .pdq import FAST_MIN_SIDE

        return DecodeNeeds("L", FAST_MIN_SIDE)
    if algorithm == "grid":
        from .grid import GRID_SIDE

        return DecodeNeeds("L", GRID_SIDE * 2)
    # phash/dhash/ahash: one draft size for the three (drift measured in imagehash_compat).
    return DecodeNeeds("L", imagehash_compat.FAST_MIN_SIDE)


def merge_needs(needs: list[DecodeNeeds]) -> DecodeNeeds:
    """One decode that serves every hasher in ``needs``."""
    mode = "RGB" if any(n.mode == "RGB" for n in needs) else "L"
    if any(n.draft_min_side is None for n in needs):
        return DecodeNeeds(mode, None)
    return DecodeNeeds(mode, max(n.draft_min_side for n in needs))


def compute(image: Image.Image, algorithm: str = DEFAULT_ALGORITHM, *, exact: bool = False,
            full_size: tuple[int, int] | None = None) -> Fingerprint:
    """The ``algorithm`` fingerprint of an already decoded RGB or L image. ``full_size``:
    :attr:`hashmatch.decode.Decoded.full_size` when ``image`` is a DCT-domain downscale
    (fast PDQ filters at the full resolution's scale)."""
    check_algorithm(algorithm)
    if algorithm == "pdq":
        from .pdq import pdq_hash_image

        return pdq_hash_image(image, exact=exact, full_size=full_size)
    if algorithm == "grid":
        from .grid import grid_hash_image

        return grid_hash_image(image)  # one definition: no exact/fast distinction
    hasher = {
        "phash": imagehash_compat.phash,
        "dhash": imagehash_compat.dhash,
        "ahash": imagehash_compat.ahash,
    }[algorithm]
    return hasher(image, exact=exact)
