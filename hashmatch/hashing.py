"""From files and images to fingerprints: decode once, hash with every requested algorithm.

This is the public hashing API (``hash_file``, ``hash_image``, ``hash_files``) and the
per-file work unit (:func:`fingerprint_file`) that indexing runs in worker processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

from . import decode as decoding
from .errors import ImageError
from .fingerprint import FileFingerprints, Fingerprint
from .hashers import DEFAULT_ALGORITHM, compute, decode_needs, merge_needs
from .parallel import ordered_map
from .text import storable

if TYPE_CHECKING:
    from .regions import RegionConfig


def hash_image(image, algorithm: str = DEFAULT_ALGORITHM, *, exact: bool = False,
               exif_transpose: bool = True) -> Fingerprint:
    """Fingerprint of a PIL image or numpy array (HxW grey, HxWx3 RGB, HxWx4 RGBA)."""
    needs = decode_needs(algorithm, exact)
    decoded = decoding.decode(image, mode=needs.mode, exif_transpose=exif_transpose)
    return compute(decoded.image, algorithm, exact=exact, full_size=decoded.full_size)


def hash_file(source, algorithm: str = DEFAULT_ALGORITHM, *, exact: bool = False,
              exif_transpose: bool = True) -> Fingerprint:
    """Fingerprint of an image file (path, bytes or binary file object).

    Raises :class:`hashmatch.ImageError` naming the file and the reason when it cannot be read.
    """
    needs = decode_needs(algorithm, exact)
    decoded = decoding.decode(source, mode=needs.mode, draft_min_side=needs.draft_min_side,
                              exif_transpose=exif_transpose, with_sha256=False)
    return compute(decoded.image, algorithm, exact=exact, full_size=decoded.full_size)


def fingerprint_file(path, algorithms: Sequence[str] = (DEFAULT_ALGORITHM,), exact: bool = False,
                     exif_transpose: bool = True, regions: bool = False,
                     region_config: RegionConfig | None = None) -> FileFingerprints:
    """Decode ``path`` once and fingerprint it with each algorithm; never raises for bad files.

    ``regions``: also PDQ-hash the image's regions (:func:`hashmatch.regions.storage_fingerprints`)
    when PDQ is among the algorithms; ``region_config``: which steps of that run (None: all)."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else decoding.describe(path)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    # A name that is not valid UTF-8 (its odd bytes are surrogates after os.fsdecode) is
    # reported and stored with those bytes as \xNN: stores and JSON want text (text.storable).
    result = FileFingerprints(path=storable(name))
    try:
        needs = merge_needs([decode_needs(a, exact) for a in algorithms])
        decoded = decoding.decode(path, mode=needs.mode, draft_min_side=needs.draft_min_side,
                                  exif_transpose=exif_transpose)
        result.sha256, result.file_size = decoded.sha256, decoded.file_size
        result.format = decoded.format
        result.width, result.height = decoded.original_size
        result.fingerprints = [compute(decoded.image, a, exact=exact, full_size=decoded.full_size)
                               for a in algorithms]
        if regions and "pdq" in algorithms:
            from .regions import storage_fingerprints

            from . import verify
            from .regions import DEFAULT_REGION_CONFIG, find_boxes

            config = region_config or DEFAULT_REGION_CONFIG
            full = result.fingerprints[list(algorithms).index("pdq")]
            boxes = find_boxes(decoded.image, framed=False, config=config)
            result.regions = storage_fingerprints(decoded.image, full=full, boxes=boxes,
                                                  config=config)[1:]
            result.verification = verify.encode(decoded.image, boxes["content"],
                                                boxes["embedded"])
    except ImageError as exc:
        result.error = exc.reason + (f" ({exc.detail})" if exc.detail else "")
    except Exception as exc:  # noqa: BLE001 - one bad file must never stop a batch
        result.error = f"internal error ({type(exc).__name__}: {exc})"
        result.fingerprints = []
    return result


def hash_files(paths: Iterable, algorithm: str = DEFAULT_ALGORITHM, *, exact: bool = False,
               workers: int | None = None, exif_transpose: bool = True,
               progress: Callable[[int], None] | None = None,
               client=None) -> list[FileFingerprints]:
    """Hash many files in worker processes; results in input order, errors returned not raised.

    ``progress`` is called with the number of files finished so far. ``client``: hash on a
    Dask cluster instead (a ``distributed.Client``, a scheduler address, or ``"local"`` for a
    LocalCluster on this machine); see :mod:`hashmatch.distributed`.
    """
    return list(iter_hash_files(paths, (algorithm,), exact=exact, workers=workers,
                                exif_transpose=exif_transpose, progress=progress,
                                client=client))


def iter_hash_files(paths: Iterable, algorithms: Sequence[str] = (DEFAULT_ALGORITHM,), *,
                    exact: bool = False, workers: int | None = None, exif_transpose: bool = True,
                    progress: Callable[[int], None] | None = None, client=None,
                    regions: bool = False, region_config: RegionConfig | None = None):
    """Like :func:`hash_files` but yields results in order as they are ready (streaming)."""
    from .hashers import check_algorithm

    algorithms = tuple(check_algorithm(a) for a in algorithms)
    job = _FingerprintJob(algorithms, exact, exif_transpose, regions, region_config)
    if client is not None:
        from .distributed import dask_map_files

        results = dask_map_files(job, list(paths), client)
    else:
        results = ordered_map(job, list(paths), workers=workers)
    done = 0
    for result in results:
        done += 1
        if progress is not None:
            progress(done)
        yield result


@dataclass(frozen=True)
class _FingerprintJob:
    """A picklable callable for worker processes (module-level, plain data)."""

    algorithms: tuple
    exact: bool
    exif_transpose: bool
    regions: bool = False
    region_config: RegionConfig | None = None  # None: every step of the region pipeline

    def __call__(self, path) -> FileFingerprints:
        return fingerprint_file(path, self.algorithms, self.exact, self.exif_transpose,
                                self.regions, self.region_config)
