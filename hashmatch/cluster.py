"""Campaign clustering: groups of near-duplicate fingerprints (the same advert re-posted).

Every pair of fingerprints within ``max_distance`` is an edge; groups are the connected
components of that graph, so a member can be further than ``max_distance`` from the
representative when a chain of edits links them (the distance reported is the real one).

All pairs come from the Cython Hamming kernels (:mod:`hashmatch._hamming`), never a Python
loop over pairs: either a blocked linear scan of the upper triangle (each block of rows
against the rows after it) or multi-index hashing over the whole set, whichever the cost
model of :mod:`hashmatch.codeindex` says is cheaper for this size and radius. Identical codes
are collapsed first, so a picture re-posted ten thousand times costs one row, not 50 million
pairs. Edges are folded into a spanning forest as they arrive, so memory stays O(n).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from . import _hamming
from .codeindex import choose_mih_substrings, mih_cost, scan_cost
from .fingerprint import Fingerprint

QUERY_BLOCK = 4096  # rows per kernel call: bounds the hit lists held at once
MIH_MIN_ROWS = 20_000  # below this the triangle scan is as fast and needs no tables
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass
class ClusterMember:
    """One member of a cluster. ``key``: position in the input list, or item id of an Index."""

    key: int
    distance: int  # Hamming distance to the representative's fingerprint
    quality: int | None


@dataclass
class Cluster:
    """A group of near-duplicates. ``members[0]`` is the representative (highest quality)."""

    members: list[ClusterMember] = field(default_factory=list)

    @property
    def representative(self) -> ClusterMember:
        return self.members[0]

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict:
        return {"representative": self.representative.key, "size": self.size,
                "members": [m.__dict__.copy() for m in self.members]}


# -- public API ---------------------------------------------------------------------------
def cluster(fingerprints_or_index, max_distance: int | None = None, *, algorithm: str = "pdq",
            qualities=None, min_size: int = 2, threads: int | None = None) -> list[Cluster]:
    """Group near-duplicates; biggest groups first.

    ``fingerprints_or_index``: a sequence of :class:`Fingerprint` (member keys are list
    positions), a uint8 array (n, nbytes) of packed codes (keys are row numbers; pass
    ``qualities`` to choose representatives), or an open :class:`hashmatch.Index` (keys are
    item ids; ``algorithm`` picks which fingerprints to compare).
    ``max_distance``: default 31 for pdq, 10 for the 64-bit hashes. Groups smaller than
    ``min_size`` are left out (``min_size=1`` lists every input).
    """
    codes, keys, quality_values, kind = _rows_from(fingerprints_or_index, algorithm, qualities)
    radius = _default_radius(kind, codes.shape[1] * 8) if max_distance is None else max_distance
    labels = component_labels(codes, keys, int(radius), threads)
    return _build_clusters(codes, keys, quality_values, labels, min_size)


def pairs_within(codes: np.ndarray, radius: int, threads: int | None = None):
    """Every pair of rows (i < j) of ``codes`` within ``radius``: arrays (i, j, distance)."""
    edges = [(i, j, d) for i, j, d in _iter_pair_blocks(_as_code_array(codes), radius, threads)]
    if not edges:
        empty = np.empty(0, np.int64)
        return empty, empty, np.empty(0, np.int32)
    i, j, d = (np.concatenate(col) for col in zip(*edges))
    order = np.lexsort((j, i))
    return i[order], j[order], d[order]


def component_labels(codes: np.ndarray, keys: np.ndarray, radius: int,
                     threads: int | None = None) -> np.ndarray:
    """Component number of every row: rows within ``radius`` (transitively) or sharing a key
    (one item's several fingerprints) are in the same component."""
    codes = _as_code_array(codes)
    n = len(codes)
    if n == 0:
        return np.empty(0, np.int64)
    unique_codes, code_of_row = np.unique(codes, axis=0, return_inverse=True)
    code_of_row = code_of_row.reshape(-1)
    forest = _EdgeForest(n)
    forest.add(np.arange(n), _first_row_of(code_of_row))  # identical codes
    forest.add(np.arange(n), _first_row_of(np.unique(keys, return_inverse=True)[1]))  # same key
    first_row_of_code = _first_row_of_each(code_of_row, len(unique_codes))
    for i, j, _ in _iter_pair_blocks(unique_codes, radius, threads):
        forest.add(first_row_of_code[i], first_row_of_code[j])
    return forest.labels()


# -- all pairs through the kernels --------------------------------------------------------
def _iter_pair_blocks(codes: np.ndarray, radius: int, threads):
    """Yield (i, j, distance) arrays with i < j, block by block."""
    n = len(codes)
    if n < 2 or radius < 0:
        return
    mih = _mih_tables(codes, radius)
    for start in range(0, n, QUERY_BLOCK):
        block = codes[start:start + QUERY_BLOCK]
        if mih is not None:
            starts, widths, offsets, rows = mih
            offs, hit_rows, dist, _ = _hamming.mih_range_search_multi(
                block[:, None, :], codes, starts, widths, offsets, rows, radius, threads=threads)
            first = 0
        else:  # the upper triangle: this block against itself and every later row
            offs, hit_rows, dist = _hamming.range_search(block, codes[start:], radius,
                                                         threads=threads)
            first = start
        i = start + np.repeat(np.arange(len(block), dtype=np.int64), np.diff(offs))
        j = first + np.asarray(hit_rows, np.int64)
        keep = j > i
        if keep.any():
            yield i[keep], j[keep], np.asarray(dist, np.int32)[keep]


def _mih_tables(codes: np.ndarray, radius: int):
    """Multi-index hashing tables when they beat the triangle scan, else None."""
    n, nbits = len(codes), codes.shape[1] * 8
    if n < MIH_MIN_ROWS:
        return None
    nsub = choose_mih_substrings(n, nbits, radius, force=True)
    if nsub is None:
        return None
    starts, widths = _hamming.mih_layout(nbits, nsub)
    mih_ns, _ = mih_cost(n, widths, radius)
    if mih_ns >= scan_cost(n // 2, nbits // 64):  # the scan visits half the rows on average
        return None
    offsets, rows = _hamming.mih_build(codes, starts, widths)
    return starts, widths, offsets, rows


class _EdgeForest:
    """Union of edges, folded into a spanning forest whenever it grows past a few n edges."""

    def __init__(self, n: int):
        self.n = n
        self.a: list[np.ndarray] = []
        self.b: list[np.ndarray] = []
        self.pending = 0

    def add(self, a, b) -> None:
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        keep = a != b
        self.a.append(a[keep])
        self.b.append(b[keep])
        self.pending += int(keep.sum())
        if self.pending > 4 * self.n:
            self._fold()

    def _fold(self) -> None:
        labels = self.labels()
        root = _first_row_of(labels)
        self.a, self.b = [np.arange(self.n)], [root]
        self.pending = self.n

    def labels(self) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.concatenate(self.a) if self.a else np.empty(0, np.int64)
        b = np.concatenate(self.b) if self.b else np.empty(0, np.int64)
        graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(self.n, self.n))
        return connected_components(graph, directed=False)[1].astype(np.int64)


def _first_row_of(group_of_row: np.ndarray) -> np.ndarray:
    """For each row, the first row with the same group value."""
    return _first_row_of_each(group_of_row, int(group_of_row.max()) + 1)[group_of_row]


def _first_row_of_each(group_of_row: np.ndarray, ngroups: int) -> np.ndarray:
    first = np.full(ngroups, len(group_of_row), np.int64)
    np.minimum.at(first, group_of_row, np.arange(len(group_of_row)))
    return first


# -- from components to clusters ----------------------------------------------------------
def _build_clusters(codes, keys, qualities, labels, min_size) -> list[Cluster]:
    """One Cluster per component with at least min_size distinct keys."""
    if len(codes) == 0:
        return []
    # Representative row of each component: highest quality, then first in input order.
    order = np.lexsort((np.arange(len(keys)), -qualities, labels))
    is_first = np.ones(len(order), bool)
    is_first[1:] = labels[order][1:] != labels[order][:-1]
    rep_row = np.empty(labels.max() + 1, np.int64)
    rep_row[labels[order][is_first]] = order[is_first]
    distance = _row_distances(codes, codes[rep_row[labels]])
    # One member per key: its closest fingerprint to the representative.
    by_member = np.lexsort((distance, keys, labels))
    first_of_key = np.ones(len(by_member), bool)
    first_of_key[1:] = (keys[by_member][1:] != keys[by_member][:-1]) | \
        (labels[by_member][1:] != labels[by_member][:-1])
    rows = by_member[first_of_key]
    sizes = np.bincount(labels[rows], minlength=len(rep_row))
    return _clusters_from_rows(rows, labels, rep_row, keys, distance, qualities, sizes, min_size)


def _clusters_from_rows(rows, labels, rep_row, keys, distance, qualities, sizes, min_size):
    wanted = sizes[labels[rows]] >= max(1, min_size)
    rows = rows[wanted]
    is_rep = keys[rows] == keys[rep_row[labels[rows]]]
    # within a component: representative first, then by distance, then key
    rows = rows[np.lexsort((keys[rows], distance[rows], ~is_rep, labels[rows]))]
    bounds = np.flatnonzero(np.diff(labels[rows])) + 1
    clusters = [
        Cluster([ClusterMember(int(keys[r]), int(distance[r]),
                               None if qualities[r] < 0 else int(qualities[r])) for r in group])
        for group in np.split(rows, bounds) if len(group)
    ]
    clusters.sort(key=lambda c: (-c.size, c.representative.key))
    return clusters


def _row_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return _POPCOUNT8[np.bitwise_xor(a, b)].sum(axis=1, dtype=np.int32)


# -- inputs -------------------------------------------------------------------------------
def _default_radius(algorithm: str | None, nbits: int) -> int:
    """The industry "same picture" cut-off: 31 for PDQ, 10 for the 64-bit hashes."""
    from .policy import MATCH_POLICY

    if algorithm in MATCH_POLICY.max_distances:
        return MATCH_POLICY.max_distances[algorithm]
    return MATCH_POLICY.max_distances["pdq" if nbits == 256 else "phash"]


def _rows_from(source, algorithm: str, qualities):
    """(codes uint8 (n, nbytes), keys int64, qualities int16 (-1 = unknown), algorithm or
    None when the input does not say)."""
    # An Index (anything that hands out its stored rows), without importing the index
    # module: the index's search imports this module's component_labels.
    if hasattr(source, "fingerprint_rows"):
        return _rows_from_index(source, algorithm)
    if isinstance(source, np.ndarray):
        codes = _as_code_array(source)
        keys = np.arange(len(codes), dtype=np.int64)
        return codes, keys, _quality_array(qualities, len(codes)), None
    return _rows_from_fingerprints(list(source))


def _rows_from_fingerprints(fingerprints: Sequence[Fingerprint]):
    if not fingerprints:
        return np.empty((0, 32), np.uint8), np.empty(0, np.int64), np.empty(0, np.int16), None
    kinds = {(fp.algorithm, fp.nbits) for fp in fingerprints}
    if len(kinds) > 1:
        raise ValueError(f"cannot cluster different kinds of fingerprints together: "
                         f"{sorted(kinds)}")
    codes = np.stack([fp.bits for fp in fingerprints])
    quality = _quality_array([fp.quality for fp in fingerprints], len(fingerprints))
    return codes, np.arange(len(codes), dtype=np.int64), quality, fingerprints[0].algorithm


def _rows_from_index(index, algorithm: str):
    rows = index.fingerprint_rows(algorithm)
    return (np.ascontiguousarray(rows.codes, np.uint8), np.asarray(rows.item_ids, np.int64),
            np.asarray(rows.qualities, np.int16), algorithm)


def _quality_array(qualities, n: int) -> np.ndarray:
    if qualities is None:
        return np.full(n, -1, np.int16)
    values = np.array([-1 if q is None else int(q) for q in qualities], np.int16)
    if len(values) != n:
        raise ValueError(f"{n} codes but {len(values)} qualities")
    return values


def _as_code_array(codes) -> np.ndarray:
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    if codes.ndim != 2 or codes.shape[1] == 0 or codes.shape[1] % 8:
        raise ValueError(f"codes must be (n, nbytes) uint8 with nbytes a multiple of 8, "
                         f"got shape {codes.shape}")
    return codes
