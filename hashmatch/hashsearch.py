"""The search of hashes without images (:meth:`hashmatch.Index.query_hashes`,
:meth:`hashmatch.Index.search_codes`): packed codes in, each query's items within the radius
out, one search for a whole batch and no per-hit Python object until Matches are made.
No pixels to verify against: for PDQ, PDQ's own rule decides (whole image against whole
image within the policy's plain_pdq_distance).
"""
from __future__ import annotations

import numpy as np

from .needles import DIHEDRAL_VARIANTS
from .policy import MATCH_POLICY
from .results import Match
from .shard import FULL_REGION


def query_codes(shards_by_kind, store, codes, qualities, algorithm, max_distance, top_k,
                dihedral) -> list[list[Match]]:
    """query_hashes of (Q, nbytes) packed codes of one length (``qualities``: the
    queries' own, for Match.query_quality)."""
    nbits = codes.shape[1] * 8
    max_distance = MATCH_POLICY.resolve(algorithm, False, max_distance).max_distance
    radius = max(0, min(int(max_distance), nbits))
    needles = codes[:, None, :]
    variants = ["original"]
    if dihedral and algorithm == "pdq":
        from .hashers.pdq import dihedral_from_hash

        variants = list(DIHEDRAL_VARIANTS)
        needles = np.ascontiguousarray(dihedral_from_hash(codes), np.uint8)
    shard = shards_by_kind.get((algorithm, nbits))
    hits = code_hits(shard, needles, radius, roles=("full", "region", "crop"))
    if algorithm == "pdq" and len(hits[1]):
        hits = _plain_pdq_rule(shard, *hits)
    if top_k is not None:
        hits = _first_of_each(int(top_k), *hits)
    return _matches(store, shard, algorithm, variants, qualities, *hits)


def _plain_pdq_rule(shard, lims, item_ids, distances, rows, variant):
    """The hits whose best pair is whole image vs whole image within PDQ's usual radius
    (what Index's verification stage keeps for an item without pixels)."""
    counts = lims[1:] - lims[:-1]
    keep = shard.is_full_frame(rows) & (distances <= MATCH_POLICY.plain_pdq_distance)
    query = np.repeat(np.arange(len(counts)), counts)[keep]
    counts = np.bincount(query, minlength=len(counts))
    lims = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=lims[1:])
    return lims, item_ids[keep], distances[keep], rows[keep], variant[keep]


def _first_of_each(top_k: int, lims, item_ids, distances, rows, variant):
    """Each query's first ``top_k`` hits (they are best first)."""
    counts = lims[1:] - lims[:-1]
    keep = np.arange(len(item_ids)) - np.repeat(lims[:-1], counts) < top_k
    counts = np.minimum(counts, top_k)
    lims = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=lims[1:])
    return lims, item_ids[keep], distances[keep], rows[keep], variant[keep]


def _matches(store, shard, algorithm, variants, qualities, lims, item_ids, distances, rows,
             variant) -> list[list[Match]]:
    if algorithm == "pdq":
        from . import verify

        kind_words, facts = verify.PLAIN_WORDS, {"rule": verify.PLAIN_RULE}
    else:
        kind_words, facts = ("similar hash (not verified)",
                             {"rule": f"{algorithm} distance <= radius"})
    counts = lims[1:] - lims[:-1]
    items = store.get_items(sorted(set(item_ids.tolist()))) if len(item_ids) else {}
    out, at = [], 0
    for quality, count in zip(qualities, counts.tolist()):
        matches = []
        for j in range(at, at + count):
            item = items[int(item_ids[j])]
            row, distance = int(rows[j]), int(distances[j])
            sq = int(shard.qualities[row])
            matches.append(Match(
                item_id=int(item_ids[j]), distance=distance, algorithm=algorithm,
                path=item.path, source=item.source, labels=list(item.labels),
                meta=dict(item.meta), sha256=item.sha256, query_region=FULL_REGION,
                query_variant=variants[int(variant[j])],
                stored_region=str(shard.names[shard.region_codes[row]]),
                stored_variant=str(shard.names[shard.variant_codes[row]]),
                query_quality=quality, stored_quality=None if sq < 0 else sq,
                score=distance, kind="copy", verified=None, verdict=kind_words,
                evidence=dict(facts)))
        out.append(matches)
        at += count
    return out


def code_hits(shard, needles, radius: int, roles):
    """(lims, item_ids, distances int32, shard rows, needle) of (Q, m, nbytes) needles:
    per query, every item with a live row of ``roles`` within ``radius`` of one of its
    needles, once, at its best pair (lowest distance, then needle, role, row), sorted by
    (distance, item id). Needle 0 meets every role of ``roles``; the others (rotations)
    meet full frames only, as :func:`hashmatch.regions.search_roles` says. ``shard``: the
    codes of the needles' algorithm and length (None: none stored)."""
    from .regions import ROLES

    nq = len(needles)
    parts = []  # (query, fingerprint ids, distances, needle, role number)
    if shard is not None and len(shard):
        for role in roles:
            part = shard.codes.parts.get(role)
            if part is None or len(part) == 0:
                continue
            these = needles if role == "full" else needles[:, :1]
            offsets, ids, dist, var = part.range_search_multi(these, radius)
            query = np.repeat(np.arange(nq, dtype=np.int64), offsets[1:] - offsets[:-1])
            parts.append((query, ids, dist, var, np.full(len(ids), ROLES.index(role))))
    if not parts:
        return (np.zeros(nq + 1, np.int64), np.empty(0, np.int64), np.empty(0, np.int32),
                np.empty(0, np.int64), np.empty(0, np.int8))
    query, fp_ids, dist, var, role_number = (np.concatenate(c) for c in zip(*parts))
    rows = shard.rows_of(fp_ids)
    items = shard.item_ids[rows]
    # best pair per (query, item), then (distance, item) order within each query
    order = np.lexsort((rows, role_number, var, dist, items, query))
    query, items, dist, rows, var = (query[order], items[order], dist[order],
                                     rows[order], var[order])
    first = np.ones(len(items), bool)
    first[1:] = (items[1:] != items[:-1]) | (query[1:] != query[:-1])
    order = np.nonzero(first)[0]
    order = order[np.lexsort((items[order], dist[order], query[order]))]
    query, items, dist, rows, var = (query[order], items[order], dist[order],
                                     rows[order], var[order])
    lims = np.zeros(nq + 1, np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=lims[1:])
    return lims, items, dist.astype(np.int32, copy=False), rows, var
