"""Plain-numpy twins of the kernels in ``hashmatch._hamming``.

Written for obviousness, not speed: every result is derived from the full distance matrix.
tests/test_hamming_twins.py proves each kernel equal to its twin. Conventions (CSR results,
ordering, padding) are documented in ``hashmatch._hamming``.
"""
from __future__ import annotations

import math

import numpy as np

PAD_DISTANCE = 2147483647


def _bits(codes: np.ndarray) -> np.ndarray:
    """(n, nbits) 0/1 array; bit j is bit j % 64 of little-endian uint64 word j // 64."""
    codes = np.ascontiguousarray(codes, dtype=np.uint8)
    return np.unpackbits(codes, axis=-1, bitorder="little")


def distance_matrix(a, b, threads=None) -> np.ndarray:
    a_bits = _bits(a).astype(np.int32)
    b_bits = _bits(b).astype(np.int32)
    # |a xor b| = |a| + |b| - 2 |a and b|
    return (a_bits.sum(1)[:, None] + b_bits.sum(1)[None, :] - 2 * a_bits @ b_bits.T).astype(
        np.int32
    )


def _csr_from_mask(mask: np.ndarray):
    offsets = np.zeros(mask.shape[0] + 1, dtype=np.int64)
    np.cumsum(mask.sum(1), out=offsets[1:])
    _, ids = np.nonzero(mask)  # row-major: per query, ids ascending
    return offsets, ids.astype(np.int64)


def range_search(queries, database, radius, threads=None):
    d = distance_matrix(queries, database)
    mask = d <= radius
    offsets, ids = _csr_from_mask(mask)
    return offsets, ids, d[mask].astype(np.int32)


def _multi_min(needles, database):
    """(nq, n) minimum distance over each query's needles and the lowest needle reaching it."""
    needles = np.asarray(needles, dtype=np.uint8)
    if needles.ndim == 2:
        needles = needles[None]
    nq, m, nbytes = needles.shape
    n = np.asarray(database).shape[0]
    d = distance_matrix(needles.reshape(nq * m, nbytes), database).reshape(nq, m, n)
    if m == 0 or n == 0:
        return np.zeros((nq, n), np.int32), np.zeros((nq, n), np.int8)
    return d.min(axis=1), d.argmin(axis=1).astype(np.int8)  # argmin: first minimum


def range_search_multi(needles, database, radius, threads=None):
    dmin, arg = _multi_min(needles, database)
    mask = dmin <= radius
    offsets, ids = _csr_from_mask(mask)
    return offsets, ids, dmin[mask].astype(np.int32), arg[mask]


def range_search_hits(needles, radii, database, threads=None):
    needles = np.asarray(needles, dtype=np.uint8)
    d = distance_matrix(database, needles)  # (n, m)
    hit = (d <= np.asarray(radii, dtype=np.int64)[None, :]).any(axis=1)
    return np.nonzero(hit)[0].astype(np.int64), d[hit].astype(np.int32).reshape(-1, len(needles))


def bucket_range_search(needles, needle_keys, key_masks, offsets, database, radius):
    offsets = np.asarray(offsets, dtype=np.int64)
    bucket_of_row = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    allowed = np.asarray(needle_keys, np.int64)[None, :] ^ np.asarray(key_masks, np.int64)[:, None]
    d = distance_matrix(database, needles)  # (n, m)
    hit = np.zeros(d.shape, dtype=bool)
    for j in range(len(needles)):
        hit[:, j] = (d[:, j] <= radius) & np.isin(bucket_of_row, allowed[:, j])
    rows, which = np.nonzero(hit)  # row-major: by row, then needle
    return rows.astype(np.int64), which.astype(np.int32)


def range_search_multi_candidates(needles, database, cand_offsets, cand_rows, radius,
                                  threads=None):
    dmin, arg = _multi_min(needles, database)
    allowed = np.zeros(dmin.shape, dtype=bool)
    for q in range(dmin.shape[0]):
        allowed[q, cand_rows[cand_offsets[q]:cand_offsets[q + 1]]] = True
    mask = (dmin <= radius) & allowed
    offsets, ids = _csr_from_mask(mask)
    return offsets, ids, dmin[mask].astype(np.int32), arg[mask]


def topk(queries, database, k, threads=None, live=None):
    d = distance_matrix(queries, database).astype(np.int64)
    nq, n = d.shape
    if live is not None:
        d[:, ~np.asarray(live, dtype=bool)] = PAD_DISTANCE
    ids = np.broadcast_to(np.arange(n, dtype=np.int64), d.shape)
    order = np.lexsort((ids, d), axis=1)[:, :k]
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_d = np.full((nq, k), PAD_DISTANCE, dtype=np.int32)
    take = min(k, n)
    if take:
        chosen_d = np.take_along_axis(d, order, axis=1)
        chosen_ids = np.take_along_axis(ids, order, axis=1)
        chosen_ids = np.where(chosen_d == PAD_DISTANCE, -1, chosen_ids)
        out_ids[:, :take] = chosen_ids
        out_d[:, :take] = chosen_d
    return out_ids, out_d


# --- multi-index hashing -------------------------------------------------------------------

SPLIT_MIXED = 2


def mih_layout(nbits, nsub, split_parity=False):
    if split_parity == SPLIT_MIXED:
        if nbits != 256 or nsub < 4:
            raise ValueError("split_parity layouts need 256-bit codes and at least 4 substrings")
        pdq_mix_tables(nsub)
        split_parity = False
    if not split_parity:
        base, extra = divmod(nbits, nsub)
        widths = np.array([base + 1] * extra + [base] * (nsub - extra), dtype=np.int32)
        starts = np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(np.int32)
        return starts, widths
    # nsub tables over the 4 words (parity classes) of the split codes, as evenly as
    # possible, extra tables to words 3, 0, 1 in that order; the wider tables first
    per_word = {w: nsub // 4 for w in range(4)}
    for w in [3, 0, 1][:nsub % 4]:
        per_word[w] += 1
    tables = []
    for order, w in enumerate([3, 0, 1, 2]):
        k = per_word[w]
        sizes = [64 // k + (i < 64 % k) for i in range(k)]
        for size, start in zip(sizes, 64 * w + np.concatenate([[0], np.cumsum(sizes)[:-1]])):
            tables.append((size, order, int(start)))
    tables.sort(key=lambda t: (-t[0], t[1], t[2]))
    return (np.array([t[2] for t in tables], dtype=np.int32),
            np.array([t[0] for t in tables], dtype=np.int32))


def pdq_parity_permutation() -> np.ndarray:
    """perm[q] = the bit (in _bits order) that becomes bit q of the parity-split code.

    PDQ bit k = 16 i + j (sign of DCT coefficient (i, j)) is, in the packed hex order, bit
    7 - p % 8 of byte p // 8 with p = 255 - k; in _bits order that is bit 8 * (p // 8) + k % 8.
    Word 2 * (i % 2) + j % 2 of the split code takes the bits of that parity class, in
    increasing _bits order."""
    k = np.arange(256)
    p = 255 - k
    position = 8 * (p // 8) + k % 8
    word = 2 * ((k // 16) % 2) + (k % 16) % 2
    perm = []
    for w in range(4):
        perm.extend(sorted(position[word == w].tolist()))
    return np.array(perm)


def pdq_parity_split(codes, threads=None):
    bits = _bits(codes)[:, pdq_parity_permutation()]
    return np.packbits(bits, axis=-1, bitorder="little")


def pdq_mix_tables(nsub):
    """Mixed parity layout: plain widths; the widest tables take class-3 bits only (as many
    as leave >= 64 bits of tables to each of classes 0, 1, 2, dealt round robin), the others
    an even share of their class's 64 bits topped up with class-3 bits."""
    if nsub < 4:
        raise ValueError("split_parity layouts need 256-bit codes and at least 4 substrings")
    widths = mih_layout(256, nsub)[1].tolist()
    for pure in range(nsub, -1, -1):
        cls = [3] * pure + [i % 3 for i in range(nsub - pure)]
        totals = [sum(w for w, c in zip(widths, cls) if c == k) for k in range(4)]
        if totals[3] <= 64 and min(totals[:3]) >= 64:
            break
    else:
        raise ValueError(f"no mixed parity layout of {nsub} tables")
    own = {t: widths[t] for t in range(nsub) if cls[t] == 3}
    for k in range(3):
        mine = sorted((widths[t], t) for t in range(nsub) if cls[t] == k)
        left = 64
        for i, (w, t) in enumerate(mine):
            own[t] = min(w, math.ceil(left / (len(mine) - i)))
            left -= own[t]
    nxt = [0, 64, 128, 192]
    out = []
    for t in range(nsub):
        c, fill = cls[t], widths[t] - own[t]
        out.append((c, nxt[c], own[t], nxt[3] + (own[t] if c == 3 else 0), fill))
        nxt[c] += own[t]
        nxt[3] += fill
    return out


def pdq_parity_mix(codes, nsub, threads=None):
    perm = []
    for _, s0, w0, s3, w3 in pdq_mix_tables(nsub):
        perm += list(range(s0, s0 + w0)) + list(range(s3, s3 + w3))
    bits = _bits(pdq_parity_split(codes))[:, perm]
    return np.packbits(bits, axis=-1, bitorder="little")


def substring_keys(codes, start, width) -> np.ndarray:
    """Value of bits [start, start + width) of each code, bit start as the least significant."""
    bits = _bits(codes)[:, start:start + width].astype(np.uint64)
    return (bits << np.arange(width, dtype=np.uint64)).sum(axis=1).astype(np.uint32)


def mih_build(codes, starts, widths, threads=None, split_parity=False):
    if split_parity == SPLIT_MIXED:
        codes = pdq_parity_mix(codes, len(starts))
    elif split_parity:
        codes = pdq_parity_split(codes)
    offsets, rows = [], []
    for start, width in zip(starts, widths):
        keys = substring_keys(codes, int(start), int(width))
        counts = np.bincount(keys, minlength=1 << int(width))
        offsets.append(np.concatenate([[0], np.cumsum(counts)]))
        rows.append(np.argsort(keys, kind="stable"))
    n = np.asarray(codes).shape[0]
    return (np.concatenate(offsets).astype(np.uint32) if offsets else np.zeros(0, np.uint32),
            np.array(rows, dtype=np.uint32).reshape(len(rows), n))


def mih_range_search_multi(needles, codes, starts, widths, offsets, rows, radius, threads=None,
                           split_parity=False):
    """MIH is exact, so its twin is the brute-force multi-needle range search."""
    return range_search_multi(needles, codes, radius)


# --- MIH probe plan ---------------------------------------------------------------------

MIH_NS_PER_PROBE = 25.0
MIH_NS_PER_CANDIDATE = 45.0


def _probe_unit_cost(n, width):
    return MIH_NS_PER_PROBE + MIH_NS_PER_CANDIDATE * math.ldexp(float(n), -width)


def _ball_cost(n, width, radius):
    keys = 0.0
    for i in range(min(radius, width) + 1):
        keys += float(math.comb(width, i))
    return keys * _probe_unit_cost(n, width)


def mih_probe_plan(needles, starts, widths, n, radius, split_parity=False):
    """The probe radius of each needle's key in each table (nsub, m), -1 = not probed.

    One needle: the classic plan (radius // nsub + 1 on tables 0..radius % nsub, one less
    on the rest). Several: every distinct key of a table starts at the classic floor
    radius // nsub - 1 (at most the table width); then, eagerly, the key with the lowest
    (cost of its next radius step / its needles still short of radius + 1 contributions,
    key index) is raised, a needle counting rho + 1 per table (or done when a table is
    enumerated whole); the classic plan is kept when its model cost is lower."""
    needles = np.ascontiguousarray(needles, dtype=np.uint8)
    if split_parity == SPLIT_MIXED:
        keyed = pdq_parity_mix(needles, len(starts))
    elif split_parity:
        keyed = pdq_parity_split(needles)
    else:
        keyed = needles
    m, nsub, radius = len(needles), len(starts), int(radius)
    s, a = divmod(radius, nsub) if nsub else (0, 0)
    groups = []  # [table, key, needle mask, radius]
    for t in range(nsub):
        keys = substring_keys(keyed, int(starts[t]), int(widths[t])).tolist()
        for key in dict.fromkeys(keys):
            mask = sum(1 << j for j in range(m) if keys[j] == key)
            groups.append([t, key, mask, -1 if radius < 0 else (s if t <= a else s - 1)])
    width = [int(widths[g[0]]) for g in groups]
    if m > 1 and radius >= 0:
        fixed_cost = sum(_ball_cost(n, w, g[3]) for g, w in zip(groups, width))
        floors = [min(s - 1, int(w)) for w in widths]
        need = [radius + 1 - sum(f + 1 for f in floors)] * m
        full = any(f == int(w) for f, w in zip(floors, widths))
        open_ = {j for j in range(m) if need[j] > 0 and not full}
        greedy_cost = 0.0
        for g, w in zip(groups, width):
            g[3] = min(s - 1, w)
            greedy_cost += _ball_cost(n, w, g[3])
        while open_:
            best = None
            for i, (g, w) in enumerate(zip(groups, width)):
                helped = sum(1 for j in open_ if g[2] >> j & 1)
                if helped == 0 or g[3] >= w:
                    continue
                step = float(math.comb(w, g[3] + 1)) * _probe_unit_cost(n, w)
                if best is None or (step / helped, i) < best[:2]:
                    best = (step / helped, i, step)
            g, w = groups[best[1]], width[best[1]]
            g[3] += 1
            greedy_cost += best[2]
            for j in range(m):
                if g[2] >> j & 1:
                    need[j] -= 1
                    if need[j] <= 0 or g[3] == w:
                        open_.discard(j)
        if fixed_cost < greedy_cost:
            for g in groups:
                g[3] = s if g[0] <= a else s - 1
    out = np.full((nsub, m), -1, dtype=np.int32)
    for t, _, mask, rho in groups:
        for j in range(m):
            if mask >> j & 1:
                out[t, j] = rho
    return out
