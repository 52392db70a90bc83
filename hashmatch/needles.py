"""The query side: the (Fingerprint, region, variant) needles searched for one query image
or hash, and the job that makes them in worker processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image

from . import decode as decoding
from .errors import HashFormatError, ImageError
from .fingerprint import DEFAULT_BITS, Fingerprint
from .hashers import check_algorithm, decode_needs, merge_needs
from .hashers.pdq import PIL_TRANSPOSE, VARIANT_NAMES
from .regions import DEFAULT_REGION_CONFIG, RegionConfig
from .shard import FULL_REGION

# The eight rotations/flips, in the order PDQ's dihedral hashes come in.
DIHEDRAL_VARIANTS = VARIANT_NAMES


def query_fingerprints(image, algorithms: Sequence[str], exact: bool, dihedral: bool,
                       regions: bool = False,
                       region_config: RegionConfig = DEFAULT_REGION_CONFIG):
    """The (Fingerprint, region, variant) needles to search for one query image, and the
    decoded image."""
    needles, decoded, _ = query_needles(image, algorithms, exact, dihedral, regions,
                                        region_config)
    return needles, decoded


def query_needles(image, algorithms: Sequence[str], exact: bool, dihedral: bool,
                  regions: bool = False, region_config: RegionConfig = DEFAULT_REGION_CONFIG):
    """(needles, decoded image, :class:`hashmatch.regions.Aligner` or None)."""
    needs = merge_needs([decode_needs(a, exact) for a in algorithms])
    decoded = decoding.decode(image, mode=needs.mode, draft_min_side=needs.draft_min_side)
    needles, aligner = [], None
    for algorithm in algorithms:
        if regions and algorithm == "pdq":
            from .regions import query_needles as region_needles

            full = [fp for fp, _ in _variants(decoded.image, algorithm, exact, True,
                                              decoded.full_size)]
            found, aligner = region_needles(decoded.image, full, config=region_config)
            # Without rotations the full frame is searched as is only; regions stay.
            needles.extend(found if dihedral else found[:1] + found[len(full):])
        else:
            needles.extend((fp, FULL_REGION, variant)
                           for fp, variant in _variants(decoded.image, algorithm, exact, dihedral,
                                                        decoded.full_size))
    if aligner is None and "pdq" in algorithms:
        # Whole images only: verification still needs the query's pixels.
        from .regions import Aligner, Region

        image = decoded.image
        aligner = Aligner.of(image, [Region(FULL_REGION, (0, 0, image.width, image.height),
                                            image)])
    return needles, decoded, aligner


def _variants(image: Image.Image, algorithm: str, exact: bool, dihedral: bool,
              full_size: tuple[int, int] | None = None):
    from .hashers import compute

    if not dihedral:
        return [(compute(image, algorithm, exact=exact, full_size=full_size), "original")]
    if algorithm == "pdq":
        from .hashers.pdq import pdq_hash_image

        # One DCT gives all eight, as in the reference implementation.
        return list(zip(pdq_hash_image(image, exact=exact, dihedral=True, full_size=full_size),
                        DIHEDRAL_VARIANTS))
    return [(compute(image if op is None else image.transpose(op), algorithm, exact=exact), name)
            for name, op in PIL_TRANSPOSE.items()]


@dataclass(frozen=True)
class QueryFingerprintJob:
    algorithms: tuple
    exact: bool
    dihedral: bool
    regions: bool = False
    region_config: RegionConfig = DEFAULT_REGION_CONFIG

    def __call__(self, source):
        name = decoding.describe(source)
        try:
            needles, decoded, aligner = query_needles(source, self.algorithms, self.exact,
                                                      self.dihedral, self.regions,
                                                      self.region_config)
            return name, needles, decoded.sha256, aligner, None
        except ImageError as exc:
            return name, [], None, None, exc.reason + (f" ({exc.detail})" if exc.detail else "")


def pdq_quality(fingerprints) -> int | None:
    for fp in fingerprints:
        if fp.algorithm == "pdq":
            return fp.quality
    return None


def as_fingerprints(hashes, algorithm: str, qualities) -> list[Fingerprint]:
    check_algorithm(algorithm)
    if isinstance(hashes, (str, Fingerprint)):
        hashes = [hashes]
    if isinstance(hashes, np.ndarray):
        arr = np.atleast_2d(np.asarray(hashes, np.uint8))
        if arr.shape[1] * 8 != DEFAULT_BITS[algorithm] and algorithm == "pdq":
            raise HashFormatError(f"pdq codes must be 32 bytes each, got {arr.shape[1]}")
        hashes = [Fingerprint(algorithm, row) for row in arr]
    out = []
    qualities = list(qualities) if qualities is not None else [None] * len(hashes)
    for value, quality in zip(hashes, qualities):
        if isinstance(value, Fingerprint):
            if value.algorithm != algorithm:
                raise HashFormatError(f"got a {value.algorithm} fingerprint, expected {algorithm}")
            out.append(value if quality is None else Fingerprint(algorithm, value.bits, quality))
        else:
            out.append(Fingerprint.from_hex(str(value), algorithm, quality))
    return out


def hash_variants(fp: Fingerprint, dihedral: bool):
    """(m, nbytes) needles of one hash: itself, or (PDQ, ``dihedral``) its 8
    rotations/flips derived from its bits, in DIHEDRAL_VARIANTS order."""
    if not dihedral or fp.algorithm != "pdq":
        return fp.bits[None, :]
    from .hashers.pdq import dihedral_from_hash

    return np.ascontiguousarray(dihedral_from_hash(fp.bits)[0], np.uint8)
