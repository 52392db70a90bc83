"""The decision rule of the region-aware search: radius, margin, penalties, and the rule
itself (:func:`select_matches`), in one place for the Index and the benchmark."""
from __future__ import annotations

import numpy as np

from ..policy import MATCH_POLICY
from .names import RegionName

# The decision's thresholds (why each value: hashmatch.policy.MatchPolicy).
PDQ_MAX_DISTANCE = MATCH_POLICY.region_max_distance
PDQ_MARGIN = MATCH_POLICY.region_margin
REGION_PENALTY = MATCH_POLICY.region_penalty  # by kind: "embedded:1" pays it too
MIN_QUALITY = MATCH_POLICY.region_min_quality


def region_penalty(name: str) -> int:
    """Bits added to a pair's distance when one side is region ``name`` (none for a name
    hashmatch does not write: a hash list's)."""
    region = RegionName.try_parse(name)
    return REGION_PENALTY.get(region.kind, 0) if region is not None else 0


# A pair this close is a match whatever else is near (hashmatch.policy.MatchPolicy.certain).
PDQ_CERTAIN = MATCH_POLICY.certain
# Stored items whose full frames are this close are one picture for the margin test.
DUPLICATE_DISTANCE = MATCH_POLICY.duplicate_distance


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
