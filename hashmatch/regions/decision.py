"""The decision rule of the region-aware search: radius, margin, penalties, and the rule
itself (:func:`select_matches`), in one place for the Index and the benchmark."""
from __future__ import annotations

import numpy as np

from .names import RegionName

# Recommended defaults for PDQ over regions (measured, benchmarks/RESULTS.md "Robustness"):
# the best item must be within PDQ_MAX_DISTANCE and at least PDQ_MARGIN bits closer than any
# other item. Template-made images (ID cards of one design, chat screenshots of one app) sit
# 10-25 bits from each other; a copy is much closer to its source than to the source's siblings,
# a query of an unknown card of the same design is about equally close to all of them.
# The margin test is only as good as the database is dense: in a case folder of 40 photos
# the runner-up of an unrelated query is far, and unrelated photos come as close as ~85
# (tests/test_region_matching.py). The default radius stays below that; a big database lets
# the margin test carry a wider one (the benchmark's operating point is at 128).
PDQ_MAX_DISTANCE = 76
PDQ_MARGIN = 12
# Added to the distance of any pair involving an ``embedded`` region: loosely trimmed regions
# of UI-heavy images (chat screenshots, posters) resemble each other; measured: +14 bits
# raised recall at 1% false alarm on the --quick suite (see the ablation table).
# "turned": the blind guesses of _straightened meet wrong items a few bits closer than the
# other needles do, which broke the margin test of a cropped copy (quick suite, 6 bits: crop_20
# back to its recall without guesses at 1 % false alarm, rotate_5 -1 query of 41).
REGION_PENALTY = {"embedded": 14, "turned": 6}  # by kind: "embedded:1" pays it too


# PDQ quality below this: the region carries too little information to match on (flat: 0,
# near-empty page with one word: 5, smooth gradient: 44; every corpus photo, receipt and
# generated advert: >= 90). Such fingerprints are stored and reported with their quality but
# take no part in matching unless the query lowers min_quality. Measured: 50 or 80 changes
# recall by <= 0.001 on the benchmark. Dense text is NOT flagged by PDQ quality (100); the
# margin test is what keeps text-heavy template images from flooding results.
MIN_QUALITY = 50


def region_penalty(name: str) -> int:
    """Bits added to a pair's distance when one side is region ``name`` (none for a name
    hashmatch does not write: a hash list's)."""
    region = RegionName.try_parse(name)
    return REGION_PENALTY.get(region.kind, 0) if region is not None else 0


# A pair this close is a match whatever else is near: it keeps near-duplicates in the
# database (a photo and its re-encode) from cancelling each other in the margin test. Not
# PDQ's usual 31: unknown posters of a known poster's template sit 28 bits from it (quick
# suite: 31 -> 16 raised recall at 1 % false alarm from 0.725 to 0.756).
PDQ_CERTAIN = 16
# Stored items whose full frames are this close are one picture for the margin test.
DUPLICATE_DISTANCE = 8


def select_matches(scores: np.ndarray, max_distance: int, margin: int | None = None,
                   certain: int | None = None, groups: np.ndarray | None = None) -> np.ndarray:
    """Which items of each query row match: a boolean array shaped like ``scores``.

    ``scores``: (n_queries, n_items) best pair score per item (large = no candidate). An item
    matches if its score is <= ``max_distance`` and either <= ``certain``, or it belongs to
    the row's best group and every item outside that group scores at least ``margin`` more.
    ``groups``: (n_queries, n_items) group label per item (near-duplicate items share one);
    None = every item its own group. Runner-ups count whatever their score, so the answer at
    a smaller ``max_distance`` is the answer at a larger one cut at ``max_distance``.
    """
    margin = PDQ_MARGIN if margin is None else margin
    certain = PDQ_CERTAIN if certain is None else certain
    scores = np.asarray(scores)
    n_rows, n_items = scores.shape
    matched = (scores <= min(max_distance, certain))
    if n_items == 0:
        return matched
    rows = np.arange(n_rows)
    best_item = np.argmin(scores, axis=1)
    best = scores[rows, best_item]
    if groups is None:
        groups = np.broadcast_to(np.arange(n_items), scores.shape)
    same_group = groups == groups[rows, best_item][:, None]
    outside = np.where(same_group, np.iinfo(np.int64).max, scores.astype(np.int64)).min(axis=1)
    wins = (outside - best >= margin) & (best <= max_distance)
    matched |= wins[:, None] & same_group & (scores <= max_distance)
    return matched
