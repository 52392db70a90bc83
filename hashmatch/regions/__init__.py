"""Regions of an image worth fingerprinting, so re-posts in a new frame still match.

A re-posted advert is rarely the same rectangle of pixels: it comes back with borders,
letterbox bars or meme caption bars, inside a screenshot of a social-media post or of a phone
screen, or cropped a little. A whole-image hash (PDQ) sees the frame, not the picture. This
package finds, cheaply and on a small copy of the image, the rectangles to hash:

- ``full``: the whole frame (always).
- ``content``: uniform borders of any colour trimmed, side by side and repeatedly (padding,
  letterbox, a coloured mat inside a white frame), with a tolerance for JPEG noise.
  ``content:1``, ``content:2`` (query side only) are earlier steps: a card whose own header
  band is flat colour is trimmed into, and its frame is an earlier step.
- ``embedded``: bands that are flat colour with sparse text or UI chrome trimmed too (meme
  caption bars, a post's header/caption/like bar, a phone's status and navigation bars): what is
  left is the largest picture-like rectangle. ``embedded:1``, ``embedded:2`` (query side only)
  are earlier steps of that search, for flat-coloured pictures (posters, chat screenshots) whose
  own bands the search would otherwise eat into.
- ``crop:<sides><percent>`` (stored side, ``storage_regions(crops=True)``): windows of the
  content region with a few percent cut off one or two sides (``CROP_WINDOWS``), so that a copy
  cropped by 5-20 % still lands near one of them (and alignment moves it onto one).

Stored side and query side differ on purpose: :func:`storage_regions` returns what goes into
the index for a known image (full, content, embedded, crop windows: about 28 PDQ codes, 900
bytes; 27.4 on average on 100 corpus photos and receipts); :func:`query_regions` what a query
hashes (the index adds PDQ's 8 rotations/flips of the query's full frame, compared with
stored full frames only). Boxes are
deduplicated: a region almost equal to one already listed is dropped.

Candidates: per stored item the best pair score (distance, plus ``REGION_PENALTY`` for pairs
involving an embedded region); items within ``PDQ_MAX_DISTANCE`` are candidates, and the
query's verification stage (hashmatch.verify, Index._verify) decides which are the same
picture. :func:`select_matches` is the older relative rule (the best item ``PDQ_MARGIN``
bits closer than any other), applied only when a caller asks for ``margin`` > 0.

Everything is measured in benchmarks/bench_robustness.py (RESULTS.md, "Robustness").

The package, by job: :mod:`~hashmatch.regions.boxes` (finding the boxes: content, embedded,
framed rectangles; :class:`Region`), :mod:`~hashmatch.regions.tilt` (turned pictures turned
back: deskewed, straightened, turned:N), :mod:`~hashmatch.regions.fingerprints` (what is
stored and what a query searches with: crop windows, the two lists, their fingerprints),
:mod:`~hashmatch.regions.align` (query-time alignment, :class:`Aligner`),
:mod:`~hashmatch.regions.names` (:class:`RegionName`, the one spelling of region names, and
the stored roles a query needle meets), :mod:`~hashmatch.regions.decision` (radius, margin,
penalties, :func:`select_matches`) and :mod:`~hashmatch.regions.config`
(:class:`RegionConfig`: which steps run, handed down by the Index).

The names below are re-exported so that ``from hashmatch import regions; regions.X`` keeps
working. They are values: assigning ``regions.X`` changes nothing the pipeline reads (switch
a step with a :class:`RegionConfig`).
"""
from __future__ import annotations

from .align import (ALIGN_CONTENDERS, ALIGN_MAX_PIXELS, ALIGN_RESEARCH, ALIGN_ROWS,
                    ALIGN_SIDE, ALIGN_STEPS, ALIGN_WINDOW, Aligner)
from .boxes import DEDUP_IOU, Box, Region, find_boxes, iou
from .config import DEFAULT_REGION_CONFIG, RegionConfig
from .decision import (DUPLICATE_DISTANCE, MIN_QUALITY, PDQ_CERTAIN, PDQ_MARGIN,
                       PDQ_MAX_DISTANCE, REGION_PENALTY, region_penalty, select_matches)
from .fingerprints import (CROP_WINDOWS, crop_window_box, crop_windows, query_fingerprints,
                           query_needles, query_regions, storage_fingerprints, storage_regions)
from .names import (ALIGNED_SUFFIX, CROP_SEARCHERS, ROLES, RegionName, RegionNameError,
                    search_roles, stored_role)

__all__ = [
    "ALIGNED_SUFFIX", "ALIGN_CONTENDERS", "ALIGN_MAX_PIXELS", "ALIGN_RESEARCH", "ALIGN_ROWS",
    "ALIGN_SIDE", "ALIGN_STEPS", "ALIGN_WINDOW", "Aligner", "Box", "CROP_SEARCHERS",
    "CROP_WINDOWS", "DEDUP_IOU", "DEFAULT_REGION_CONFIG", "DUPLICATE_DISTANCE", "MIN_QUALITY",
    "PDQ_CERTAIN", "PDQ_MARGIN", "PDQ_MAX_DISTANCE", "REGION_PENALTY", "ROLES", "Region",
    "RegionConfig", "RegionName", "RegionNameError", "crop_window_box", "crop_windows",
    "find_boxes", "iou", "query_fingerprints", "query_needles", "query_regions",
    "region_penalty", "search_roles", "select_matches", "storage_fingerprints",
    "storage_regions", "stored_role",
]
