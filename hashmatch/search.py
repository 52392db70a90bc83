"""The search of one image query, as its stages.

Per shard (the codes of one algorithm and bit length), :func:`search_shard`:

1. collect pairs (:func:`collect_pairs`): each stored row's best pair with the query's
   needles, one pass per stored role with the needles that may meet it
   (:func:`hashmatch.regions.search_roles`); in the region-aware query, crop windows and
   regions pass the low-frequency prefilter first (shard.PREFILTER_THRESHOLD);
2. align (:func:`align_contenders`, :func:`research_moved_boxes`): the closest items'
   pairs aligned onto the stored pictures, and the boxes that moved searched again;
3. decide (:func:`decide`): each item's best pair within the radius (and the margin test
   when one is asked for), as an :class:`Evidence`.

Over every shard (:func:`search`): the candidates ranked, 4. the closest verified on their
stored pixels (:func:`verify_candidates`), and what is kept turned into Match objects.
Thresholds and defaults: :mod:`hashmatch.policy`.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from . import regions as rg
from . import shard as shards
from .policy import MATCH_POLICY
from .regions import DEFAULT_REGION_CONFIG, RegionConfig, RegionName
from .results import Match
from .shard import FULL_REGION


@dataclass(frozen=True)
class Pairs:
    """The best pair of each hit stored row, as parallel arrays (one entry per row)."""

    rows: np.ndarray  # shard rows
    needle: np.ndarray  # position in the needle list
    score: np.ndarray  # distance + the larger region penalty: what the radius is compared with
    distance: np.ndarray
    order_key: np.ndarray  # tie order: needle rank, then role, then row
    aligned: np.ndarray  # True: the pair's query box was moved onto the stored picture

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls) -> "Pairs":
        none = np.empty(0, np.int64)
        return cls(none, none, none, none, none, np.empty(0, bool))

    @classmethod
    def concatenate(cls, parts: list["Pairs"]) -> "Pairs":
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("rows", "needle", "score", "distance", "order_key",
                                  "aligned")))

    def best_per_item(self, items: np.ndarray) -> np.ndarray:
        """Each item's best pair (lowest score, then needle order, role, row), item order."""
        order = np.lexsort((self.order_key, self.score, items))
        return order[np.r_[True, items[order][1:] != items[order][:-1]]]


@dataclass(frozen=True)
class Evidence:
    """Why a stored item is a candidate: the pair that decided it."""

    score: int
    algorithm: str
    distance: int
    query_region: str
    query_variant: str
    stored_region: str
    stored_variant: str
    query_quality: int | None
    stored_quality: int  # -1 = unknown
    # (grey copy index, box) of the pair's query box on the aligner's grey copies: what
    # verification compares with the stored pixels (None: nothing to verify with)
    box: tuple | None = None

    @property
    def sort_key(self) -> tuple[int, bool]:
        return self.score, self.algorithm != "pdq"  # PDQ first among equal scores


@dataclass(frozen=True)
class Judged:
    """A candidate and the decision about it."""

    item_id: int
    evidence: Evidence
    kind: str  # "copy" | "template"
    verified: bool | None
    verdict: str
    facts: dict = field(default_factory=dict)


# -- one shard ------------------------------------------------------------------------------
def search_shard(shard, algorithm, needles, max_distance, min_quality, margin,
                 use_regions: bool, aligner=None, with_boxes: bool = False,
                 slack: int = 0, region_config: RegionConfig = DEFAULT_REGION_CONFIG
                 ) -> dict[int, Evidence]:
    """Matching items of one shard (the codes of one algorithm): item -> :class:`Evidence`.
    ``max_distance``, ``min_quality``, ``margin``: None = the policy's default
    (:meth:`hashmatch.policy.MatchPolicy.resolve`). ``aligner`` (a
    :class:`hashmatch.regions.Aligner`, regions only): the closest items' pairs are aligned
    before the decision. ``with_boxes``: each Evidence carries the query box of its deciding
    pair on the aligner's grey copies (what verification compares). ``slack``: pairs this far
    beyond the radius are collected too (alignment may bring them within it).
    ``region_config.align``: whether pairs are aligned. Module-level so benchmarks can time
    the search alone."""
    limits = MATCH_POLICY.resolve(algorithm, use_regions, max_distance, min_quality, margin)
    max_distance = max(0, min(int(limits.max_distance), shard.nbits))
    min_quality, margin = limits.min_quality, limits.margin
    # Runner-ups up to ``margin`` beyond the radius count against the best item.
    radius = min(shard.nbits, max_distance + max(0, margin, slack))
    needles = usable_needles(needles, min_quality)
    pairs = collect_pairs(shard, needles, radius, min_quality, use_regions)
    if len(pairs) == 0:
        return {}
    items = shard.item_ids[pairs.rows]
    first = pairs.best_per_item(items)
    pair_boxes: dict[int, tuple] = {}  # pair -> its aligned query box
    needle_boxes: dict[int, tuple] = {}  # needle -> its box, where not the aligner's own
    if aligner is not None and use_regions and region_config.align:
        pairs, moved = align_contenders(shard, aligner, needles, pairs, items, first,
                                        pair_boxes)
        changed = bool(pairs.aligned.any())
        if moved:
            needles, pairs, found = research_moved_boxes(
                shard, aligner, needles, pairs, moved, radius, min_quality, use_regions,
                needle_boxes)
            changed = changed or found
        if changed:
            items = shard.item_ids[pairs.rows]
            first = pairs.best_per_item(items)
    deciding = decide(shard, pairs, items, first, max_distance, margin)
    out = {}
    for j in deciding:
        box = None
        if with_boxes:
            box = pair_boxes.get(int(j)) or needle_boxes.get(int(pairs.needle[j])) \
                or (aligner.boxes.get(needles[pairs.needle[j]][1]) if aligner is not None
                    else None)
        out[int(items[j])] = _evidence(shard, algorithm, needles, pairs, int(j), box)
    return out


def usable_needles(needles, min_quality) -> list:
    """The needles that take part (quality unknown or >= min_quality)."""
    return [n for n in needles
            if min_quality is None or n[0].quality is None or n[0].quality >= min_quality]


def collect_pairs(shard, needles, radius: int, min_quality, use_regions: bool) -> Pairs:
    """Stage 1: each stored row's best pair within ``radius`` with ``needles``. One pass per
    stored role with every needle that may meet it (search_roles), each row read once; the
    scan hands back the hit rows' distances to all those needles. In the region-aware query,
    roles with a low-frequency prefilter (shard.PREFILTER_THRESHOLD) are scanned through it
    instead."""
    if not needles:
        return Pairs.empty()
    codes = np.stack([fp.bits for fp, _, _ in needles])
    needle_roles = [rg.search_roles(region, variant) for _, region, variant in needles]
    rank_of = _tie_ranks(needle_roles)
    query_penalty = np.array([rg.region_penalty(region) if use_regions else 0
                              for _, region, _ in needles], np.int64)
    found = []
    for role_number, role in enumerate(rg.ROLES):
        part = shard.codes.parts.get(role)
        members = np.array([k for k, roles in enumerate(needle_roles) if role in roles],
                           np.int64)
        if part is None or len(members) == 0:
            continue
        if use_regions and part.prefilter is not None and role in shards.PREFILTER_THRESHOLD:
            ids, distances = part.prefiltered_hits(codes[members], radius,
                                                   shards.PREFILTER_THRESHOLD[role],
                                                   shards.PREFILTER_KEY_RADIUS[role])
        else:
            ids, distances = part.range_search_hits(codes[members],
                                                    np.full(len(members), radius, np.int64))
        if len(ids) == 0:
            continue
        rows = shard.rows_of(ids)
        ok = _quality_ok(shard, rows, min_quality)
        found.append(_best_pairs(shard, rows[ok], members, distances[ok], radius,
                                 query_penalty, rank_of, role_number, use_regions))
    return Pairs.concatenate(found) if found else Pairs.empty()


def _tie_ranks(needle_roles) -> np.ndarray:
    """Each needle's place in the tie order among needles: by role set, in order of first
    appearance (the whole picture as it stands first, then rotations, then cut-out
    regions), then as given."""
    first_seen: dict[tuple, int] = {}
    for roles in needle_roles:
        first_seen.setdefault(roles, len(first_seen))
    rank = np.argsort([first_seen[roles] for roles in needle_roles], kind="stable")
    rank_of = np.empty(len(needle_roles), np.int64)
    rank_of[rank] = np.arange(len(needle_roles))
    return rank_of


def _quality_ok(shard, rows: np.ndarray, min_quality) -> np.ndarray:
    """Which rows take part in matching (stored quality unknown or >= min_quality)."""
    if min_quality is None or len(rows) == 0:
        return np.ones(len(rows), bool)
    quality = shard.qualities[rows]
    return (quality < 0) | (quality >= min_quality)


def _best_pairs(shard, rows, members, distances, radius, query_penalty, rank_of, role_number,
                use_regions) -> Pairs:
    """Each hit row's best pair among the needles ``members`` (that may meet the row's
    role; ``distances``: rows x members), for the rows that have a pair within ``radius``.
    Score = distance + the larger region penalty of the two sides."""
    stored_penalty = shard.penalties_of(rows) if use_regions else np.zeros(len(rows), np.int64)
    scores = distances + np.maximum(stored_penalty[:, None], query_penalty[members][None, :])
    # lowest score, then the needle first in tie order
    ranks = rank_of[members]
    keys = np.where(distances <= radius, scores * 1024 + ranks[None, :], _NO_PAIR)
    k = np.argmin(keys, axis=1) if len(rows) else np.zeros(0, np.int64)
    at = np.arange(len(rows))
    ok = keys[at, k] != _NO_PAIR
    rows, k, at = rows[ok], k[ok], at[ok]
    order_key = (ranks[k] * 4 + role_number) * (1 << 40) + rows
    return Pairs(rows, members[k], scores[at, k], distances[at, k].astype(np.int64), order_key,
                 np.zeros(len(rows), bool))


_NO_PAIR = np.iinfo(np.int64).max


def align_contenders(shard, aligner, needles, pairs: Pairs, items, first, pair_boxes
                     ) -> tuple[Pairs, list]:
    """Stage 2: the pairs of the closest items aligned (:meth:`hashmatch.regions.Aligner.
    align`): the pairs with their aligned scores and distances, and the moved boxes worth
    searching again as (region, variant, box). Nothing is aligned when a pair is certain
    already. Each close item's ALIGN_ROWS best rows are aligned: a copy cropped on two
    sides fits inside one stored window and not in the one its unaligned frame is closest
    to. ``first``: each item's best pair; ``pair_boxes`` is filled with pair -> its aligned
    query box."""
    item_scores = pairs.score[first]
    if len(first) == 0 or int(item_scores.min()) <= MATCH_POLICY.certain:
        return pairs, []
    best = int(item_scores.min())
    closest = first[np.argsort(item_scores, kind="stable")]
    closest = closest[pairs.score[closest] <= best + rg.ALIGN_WINDOW][: rg.ALIGN_CONTENDERS]
    score, distance, aligned = pairs.score.copy(), pairs.distance.copy(), pairs.aligned.copy()
    aligned_boxes = []
    for item in items[closest]:
        mine = np.nonzero(items == item)[0]
        for j in mine[np.argsort(score[mine], kind="stable")][: rg.ALIGN_ROWS]:
            _, region, variant = needles[pairs.needle[j]]
            if not aligner.can_align(region, variant):
                continue
            aligned_distance, box = aligner.align(region, variant,
                                                  shard.codes_of(pairs.rows[j:j + 1])[0])
            if aligned_distance < distance[j]:
                score[j] -= distance[j] - aligned_distance
                distance[j] = aligned_distance
                aligned[j] = True
                pair_boxes[int(j)] = (aligner.boxes[region][0], box)
                if box != aligner.boxes[region][1]:
                    aligned_boxes.append((int(score[j]), region, variant, box))
    moved: list[tuple] = []
    for _, region, variant, box in sorted(aligned_boxes, key=lambda entry: entry[0]):
        source = aligner.boxes[region][0]
        if len(moved) < rg.ALIGN_RESEARCH and all(
                aligner.boxes[other_region][0] != source or rg.iou(box, other) < rg.DEDUP_IOU
                for other_region, _, other in moved):
            moved.append((region, variant, box))
    return replace(pairs, score=score, distance=distance, aligned=aligned), moved


def research_moved_boxes(shard, aligner, needles, pairs: Pairs, moved, radius, min_quality,
                         use_regions, needle_boxes) -> tuple[list, Pairs, bool]:
    """Stage 2, continued: boxes aligned onto the closest items, searched again as needles
    ``<region>+aligned`` (a box aligned onto a template sibling is the copy's true box and
    meets the copy's own source). Returns the needles and pairs with theirs appended, and
    whether any pair was found; ``needle_boxes`` is filled with new needle -> its box."""
    more = [(aligner.fingerprint(region, box, variant),
             str(RegionName.parse(region).with_aligned()), variant)
            for region, variant, box in moved]
    found = collect_pairs(shard, usable_needles(more, min_quality), radius, min_quality,
                          use_regions)
    if len(found) == 0:
        return needles, pairs, False
    for k, (region, _, box) in enumerate(moved):
        needle_boxes[len(needles) + k] = (aligner.boxes[region][0], box)
    shift = np.int64(len(needles) * 4) << np.int64(40)  # after every first needle
    found = replace(found, needle=found.needle + len(needles), order_key=found.order_key + shift,
                    aligned=np.ones(len(found), bool))
    # ``found`` numbers the usable boxes only while every box is appended: as the search
    # did before the stages were split (a box below the quality floor shifts the later ones')
    return list(needles) + more, Pairs.concatenate([pairs, found]), True


def decide(shard, pairs: Pairs, items, first, max_distance: int, margin: int) -> np.ndarray:
    """Stage 3: the deciding pairs (indexes into ``pairs``) of the items that match: best
    score within ``max_distance``; with ``margin`` > 0, also the margin test
    (:func:`hashmatch.regions.select_matches`)."""
    item_scores = pairs.score[first]
    if margin <= 0:
        return first[item_scores <= max_distance]
    groups = None
    if len(first) > 1:
        # Near-duplicate pictures stored twice (a photo and its re-encode) are one picture
        # for the margin test: group items whose full frames are that close. Only items
        # within the margin of the best can change the test's outcome.
        contenders = np.nonzero(item_scores < item_scores.min() + margin)[0]
        groups = np.arange(len(first))
        if len(contenders) > 1:
            full_rows = shard.full_rows_of(items[first[contenders]],
                                           pairs.rows[first[contenders]])
            stored = shard.codes_of(full_rows)
            if stored is not None:
                labels = duplicate_groups(stored)
                groups[contenders] = contenders[labels]
        groups = groups[None, :]
    return first[rg.select_matches(item_scores[None, :], max_distance, margin, groups=groups)[0]]


def _evidence(shard, algorithm: str, needles, pairs: Pairs, j: int, box) -> Evidence:
    fp, query_region, query_variant = needles[pairs.needle[j]]
    if pairs.aligned[j]:  # its box was moved onto the stored picture
        query_region = str(RegionName.parse(query_region).with_aligned())
    row = pairs.rows[j]
    return Evidence(
        score=int(pairs.score[j]), algorithm=algorithm, distance=int(pairs.distance[j]),
        query_region=query_region, query_variant=query_variant,
        stored_region=shard.names[shard.region_codes[row]],
        stored_variant=shard.names[shard.variant_codes[row]], query_quality=fp.quality,
        stored_quality=int(shard.qualities[row]), box=box)


def duplicate_groups(codes: np.ndarray) -> np.ndarray:
    """Group label per row: rows within the policy's duplicate_distance (transitively) share
    one. A query has a handful of contenders: their distance matrix and a min-label
    propagation (label = the group's first row) cost microseconds, the general clustering
    ~1 ms."""
    from .cluster import component_labels

    near_distance = MATCH_POLICY.duplicate_distance
    if len(codes) > 64:
        return component_labels(codes, np.arange(len(codes)), near_distance, threads=1)
    from ._hamming import distance_matrix

    near = distance_matrix(codes, codes, threads=1) <= near_distance
    labels = np.arange(len(codes))
    while True:
        spread = np.where(near, labels[None, :], len(codes)).min(axis=1)
        if (spread == labels).all():
            return labels
        labels = spread


# -- the whole query ------------------------------------------------------------------------
def search(shards_by_kind, store, needles, max_distance, top_k, min_quality, margin,
           use_regions: bool, aligner=None, templates: bool = False,
           region_config: RegionConfig = DEFAULT_REGION_CONFIG) -> list[Match]:
    """The query's stages over every shard: candidates (:func:`collect_candidates`), ranked
    by score, verified (:func:`verify_candidates`), cut at ``top_k``, as Matches."""
    candidates = collect_candidates(shards_by_kind, needles, max_distance, min_quality, margin,
                                    use_regions, aligner, region_config)
    ranked = sorted(candidates.items(), key=lambda kv: (kv[1].sort_key, kv[0]))
    judged = verify_candidates(store, ranked, aligner, templates)
    if top_k is not None:
        judged = judged[: int(top_k)]
    return matches_of(store, judged)


def collect_candidates(shards_by_kind, needles, max_distance, min_quality, margin,
                       use_regions: bool, aligner,
                       region_config: RegionConfig = DEFAULT_REGION_CONFIG
                       ) -> dict[int, Evidence]:
    """Item -> its best Evidence over every shard the needles' algorithms have. A verified
    PDQ query (``aligner`` given) needs no margin test unless one is asked for; it collects
    pairs up to the region margin beyond the radius (alignment may bring them in)."""
    by_kind: dict[tuple[str, int], list] = {}
    for needle in needles:
        by_kind.setdefault((needle[0].algorithm, needle[0].nbits), []).append(needle)
    best: dict[int, Evidence] = {}
    for (algorithm, nbits), group in by_kind.items():
        shard = shards_by_kind.get((algorithm, nbits))
        if shard is None or len(shard) == 0:
            continue
        pdq_verified = aligner is not None and algorithm == "pdq"
        shard_margin = margin if margin is not None or not pdq_verified else 0
        found = search_shard(shard, algorithm, group, max_distance, min_quality, shard_margin,
                             use_regions and algorithm == "pdq", aligner,
                             with_boxes=pdq_verified,
                             slack=MATCH_POLICY.region_margin if pdq_verified and use_regions
                             else 0, region_config=region_config)
        for item, evidence in found.items():
            if item not in best or evidence.sort_key < best[item].sort_key:
                best[item] = evidence
    return best


def verify_candidates(store, ranked, aligner, templates: bool) -> list[Judged]:
    """Stage 4, the decision, best first: the policy's verify_candidates closest PDQ
    candidates that have stored pixels are verified (a copy is a match; a same-template
    picture a lead, kept only with ``templates``); further ones with stored pixels are
    dropped unchecked; items without pixels (hash-list entries) keep the plain PDQ rule
    (whole image, any rotation/flip, <= 31); other algorithms' candidates are kept
    unverified.
    Verified copies first, then plain-rule matches, then template leads; each by score."""
    from . import verify

    wanted = [item for item, evidence in ranked
              if evidence.algorithm == "pdq" and evidence.box][: MATCH_POLICY.verify_candidates]
    stored = store.get_verification(wanted) if aligner is not None and wanted else {}
    # The plain rule is for items without pixels (hash lists). A candidate with pixels
    # that was not among the verified few is unchecked, not a match: in a database of
    # many same-template cards, the siblings beyond the first few would otherwise all
    # pass as "whole-image hash matches".
    beyond = [item for item, evidence in ranked if evidence.algorithm == "pdq"
              and item not in wanted and _plain_pdq_match(evidence)] if aligner is not None else []
    # Most queries have no such candidate: no store round trip for them.
    unchecked = store.verifiable_items(beyond) if beyond else set()
    copies: list[Judged] = []
    leads: list[Judged] = []
    plain: list[Judged] = []
    for item, evidence in ranked:
        if evidence.algorithm != "pdq":
            plain.append(Judged(item, evidence, "copy", None, "similar hash (not verified)",
                                {"rule": f"{evidence.algorithm} distance <= radius"}))
            continue
        if item in unchecked:
            continue
        blob = stored.get(item) if item in wanted else None
        if blob is None:  # no pixels stored (a hash-list entry)
            if _plain_pdq_match(evidence):
                plain.append(Judged(item, evidence, "copy", None, verify.PLAIN_WORDS,
                                    {"rule": verify.PLAIN_RULE}))
            continue
        try:
            data = verify.decode(blob)
        except verify.VerificationDataError as exc:
            if _plain_pdq_match(evidence):
                plain.append(Judged(item, evidence, "copy", None, verify.PLAIN_WORDS,
                                    {"rule": verify.PLAIN_RULE,
                                     "unreadable_verification_data": str(exc)}))
            continue
        judged = _verified(item, evidence, data, aligner, templates)
        if judged is not None:
            (copies if judged.kind == "copy" else leads).append(judged)
    return copies + plain + leads


def _verified(item: int, evidence: Evidence, data, aligner, templates: bool) -> Judged | None:
    """The verifier's decision on one candidate: a copy, a template lead (only with
    ``templates``), or None (dropped)."""
    from . import verify

    assert evidence.box is not None  # only candidates with a box are verified
    grey_index, box = evidence.box
    verdict = verify.verify_pair(aligner.greys[grey_index], box, evidence.query_variant, data,
                                 str(evidence.stored_region))
    if verdict.kind == "copy":
        return Judged(item, evidence, "copy", True, verify.copy_words(
            evidence.distance, evidence.query_variant, evidence.query_region,
            str(evidence.stored_region), verdict.evidence), verdict.evidence)
    if verdict.kind == "template" and templates:
        return Judged(item, evidence, "template", False, verify.TEMPLATE_WORDS,
                      verdict.evidence)
    return None


def _plain_pdq_match(evidence: Evidence) -> bool:
    """PDQ's own rule, for items the verifier cannot check: whole image against whole image
    (any rotation or flip), within PDQ's usual radius."""
    return evidence.query_region == FULL_REGION and \
        str(evidence.stored_region) == FULL_REGION and \
        evidence.distance <= MATCH_POLICY.plain_pdq_distance


def matches_of(store, judged: list[Judged]) -> list[Match]:
    """The Match objects of the kept candidates, with their items' metadata."""
    items = store.get_items([j.item_id for j in judged])
    matches = []
    for j in judged:
        item, evidence = items[j.item_id], j.evidence
        matches.append(Match(
            item_id=j.item_id, distance=evidence.distance, algorithm=evidence.algorithm,
            path=item.path, source=item.source, labels=list(item.labels), meta=dict(item.meta),
            sha256=item.sha256, query_region=evidence.query_region,
            query_variant=evidence.query_variant, stored_region=str(evidence.stored_region),
            stored_variant=str(evidence.stored_variant), query_quality=evidence.query_quality,
            stored_quality=None if evidence.stored_quality < 0 else evidence.stored_quality,
            score=evidence.score, kind=j.kind, verified=j.verified, verdict=j.verdict,
            evidence=j.facts))
    return matches
