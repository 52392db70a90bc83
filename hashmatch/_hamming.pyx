# cython: language_level=3
"""Hamming-distance kernels over packed binary codes.

Codes are C-contiguous uint8 arrays of shape (n, nbytes), nbytes a multiple of 8, read as
uint64 words (1 word = 64-bit phash, 4 words = 256-bit PDQ). Every kernel releases the GIL and
takes ``threads`` (None = all cores, 1 = single-threaded for benchmarks). Every kernel has a
plain-numpy twin in ``hashmatch._hamming_ref``; tests prove the two equal.

Result conventions (shared with the twins):
- range searches return CSR arrays ``(offsets int64[nq+1], ids int64, distances int32)``;
  the hits of query q are ``ids[offsets[q]:offsets[q+1]]``, ids ascending. Multi-needle
  searches add ``variants int8``: the needle index achieving the minimum distance (lowest
  index on ties).
- ``topk`` returns ``(ids int64 (nq, k), distances int32 (nq, k))`` sorted by (distance, id);
  when fewer than k rows are eligible the tail is padded with id -1 and distance PAD_DISTANCE.
"""

import numpy as np

from .parallel import default_workers

cimport cython
cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.math cimport ldexp
from libc.string cimport memcpy, memset

cnp.import_array()

cdef extern from "_popcount.h" nogil:
    ctypedef void (*hm_rowdist_fn)(const uint64_t *q, const uint64_t *db, int64_t n, int nwords,
                                   int32_t *out)
    ctypedef void (*hm_rowmin_fn)(const uint64_t *needles, int m, const uint64_t *db, int64_t n,
                                  int nwords, int32_t *out_min, int8_t *out_arg)
    ctypedef void (*hm_gathermin_fn)(const uint64_t *needles, const uint64_t *db,
                                     const int64_t *rows, const uint8_t *masks, int64_t n,
                                     int64_t n_readable, int ahead, int nwords, int32_t *out_min,
                                     int8_t *out_arg)
    ctypedef void (*hm_rowany_fn)(const uint64_t *needles, int m, const int32_t *radii,
                                  const uint64_t *db, int64_t n, int nwords, uint8_t *out_bits)
    ctypedef struct hm_impl:
        const char *name
        hm_rowdist_fn rowdist
        hm_rowmin_fn rowmin
        hm_gathermin_fn gathermin
        hm_rowany_fn rowany
    int hm_supported(const hm_impl **out)
    const hm_impl *hm_get_active()
    void hm_set_active(const hm_impl *impl)

cdef extern from *:
    """
    #define hm_prefetch(p) __builtin_prefetch((const void *)(p))
    #define hm_ctz(x) __builtin_ctz((unsigned)(x))
    """
    void hm_prefetch(const void *p) nogil
    int hm_ctz(unsigned x) nogil

PAD_DISTANCE = 2147483647
MAX_NEEDLES = 8

# Rows per database block: 4096 PDQ rows = 128 KiB, stays in L2 while a chunk of queries
# runs over it, so a batch reads the database from memory once per query chunk.
DEF BLOCK_ROWS = 4096
DEF QUERY_CHUNK = 32


# --------------------------------------------------------------------------------------------
# popcount implementation selection

cdef const hm_impl *_impls[8]
cdef int _n_impls = hm_supported(_impls)
hm_set_active(_impls[0])


def available_popcount_impls():
    """Names of the popcount implementations this CPU can run, best first."""
    return [_impls[i].name.decode() for i in range(_n_impls)]


def popcount_impl():
    """Name of the popcount implementation in use ("avx512_vpopcntdq", "popcnt", "portable")."""
    return hm_get_active().name.decode()


def set_popcount_impl(name):
    """Switch implementation (tests and benchmarks). Not thread-safe with running kernels."""
    for i in range(_n_impls):
        if _impls[i].name.decode() == name:
            hm_set_active(_impls[i])
            return
    raise ValueError(f"popcount implementation {name!r} not available here; "
                     f"choose from {available_popcount_impls()}")


# --------------------------------------------------------------------------------------------
# argument checking

def _threads(threads):
    if threads is None:
        return default_workers()  # every core this process may run on
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


def _as_codes(codes, name):
    """C-contiguous uint8 (n, nbytes) array with nbytes a positive multiple of 8."""
    arr = np.ascontiguousarray(codes, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] == 0 or arr.shape[1] % 8:
        raise ValueError(f"{name} must have shape (n, nbytes) with nbytes a positive multiple "
                         f"of 8, got {arr.shape}")
    return arr


def _as_needles(needles, nbytes):
    """(nq, m, nbytes) uint8 array; a 2-D (m, nbytes) array is one query."""
    arr = np.ascontiguousarray(needles, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[2] != nbytes:
        raise ValueError(f"needles must have shape (nq, m, {nbytes}) or (m, {nbytes}), "
                         f"got {np.shape(needles)}")
    if not 1 <= arr.shape[1] <= MAX_NEEDLES:
        raise ValueError(f"between 1 and {MAX_NEEDLES} needles per query, got {arr.shape[1]}")
    return arr


def _check_same_width(a, b):
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"code lengths differ: {a.shape[1] * 8} and {b.shape[1] * 8} bits")


cdef inline const uint64_t *_words(cnp.ndarray arr):
    return <const uint64_t *> cnp.PyArray_DATA(arr)


# --------------------------------------------------------------------------------------------
# growable hit lists (one per query, or per query x database part)

cdef inline int resize(void **p, size_t nbytes) noexcept nogil:
    """realloc that keeps ``*p`` (still owned by the caller) when it fails: -1, else 0."""
    cdef void *q = realloc(p[0], nbytes)
    if q == NULL:
        return -1
    p[0] = q
    return 0


cdef struct HitList:
    int64_t *rows
    int32_t *dist
    int8_t *var
    int64_t n
    int64_t cap
    int failed


cdef inline void hits_push(HitList *h, int64_t row, int32_t d, int8_t v) noexcept nogil:
    cdef int64_t cap
    if h.failed:
        return
    if h.n == h.cap:
        cap = 64 if h.cap == 0 else 2 * h.cap
        # Each pointer is replaced only once its realloc succeeded: on failure the old
        # blocks stay owned by the list and are freed by its owner (no leak).
        if (resize(<void **> &h.rows, cap * sizeof(int64_t))
                or resize(<void **> &h.dist, cap * sizeof(int32_t))
                or resize(<void **> &h.var, cap * sizeof(int8_t))):
            h.failed = 1
            return
        h.cap = cap
    h.rows[h.n] = row
    h.dist[h.n] = d
    h.var[h.n] = v
    h.n += 1


cdef HitList *hits_new(int64_t count) except NULL:
    cdef HitList *h = <HitList *> malloc(max(count, 1) * sizeof(HitList))
    if h == NULL:
        raise MemoryError()
    memset(h, 0, max(count, 1) * sizeof(HitList))
    return h


cdef void hits_free(HitList *h, int64_t count) noexcept:
    for i in range(count):
        free(h[i].rows)
        free(h[i].dist)
        free(h[i].var)
    free(h)


cdef tuple hits_to_csr(HitList *h, int64_t nq, int64_t nparts, bint with_variants):
    """Concatenate the lists of query q's parts in part order (= ascending rows)."""
    cdef int64_t q, p, total = 0, at = 0
    for q in range(nq * nparts):
        if h[q].failed:
            raise MemoryError("out of memory collecting search hits")
        total += h[q].n
    offsets = np.zeros(nq + 1, dtype=np.int64)
    rows = np.empty(total, dtype=np.int64)
    dist = np.empty(total, dtype=np.int32)
    var = np.empty(total, dtype=np.int8)
    cdef int64_t[::1] off_v = offsets
    cdef int64_t[::1] rows_v = rows
    cdef int32_t[::1] dist_v = dist
    cdef int8_t[::1] var_v = var
    cdef HitList *part
    for q in range(nq):
        for p in range(nparts):
            part = &h[q * nparts + p]
            if part.n:
                memcpy(&rows_v[at], part.rows, part.n * sizeof(int64_t))
                memcpy(&dist_v[at], part.dist, part.n * sizeof(int32_t))
                memcpy(&var_v[at], part.var, part.n * sizeof(int8_t))
                at += part.n
        off_v[q + 1] = at
    if with_variants:
        return offsets, rows, dist, var
    return offsets, rows, dist


def _split_parts(int64_t nq, int64_t n, int nthreads):
    """Split the database into parts when there are too few queries to keep threads busy."""
    if nthreads > 1 and nq < 2 * nthreads and n >= 4 * BLOCK_ROWS:
        return nthreads
    return 1


# --------------------------------------------------------------------------------------------
# distance matrix

def distance_matrix(a, b, threads=None):
    """int32 (na, nb) matrix of Hamming distances between the rows of a and b."""
    a = _as_codes(a, "a")
    b = _as_codes(b, "b")
    _check_same_width(a, b)
    cdef int nthreads = _threads(threads)
    cdef int64_t na = a.shape[0], nb = b.shape[0]
    cdef int nw = a.shape[1] // 8
    out = np.empty((na, nb), dtype=np.int32)
    if na == 0 or nb == 0:
        return out
    cdef const uint64_t *pa = _words(a)
    cdef const uint64_t *pb = _words(b)
    cdef int32_t *po = <int32_t *> cnp.PyArray_DATA(out)
    cdef int64_t nparts = _split_parts(na, nb, nthreads)
    cdef int64_t part_rows = (nb + nparts - 1) // nparts
    cdef int64_t item, i, lo, hi
    cdef hm_rowdist_fn rowdist = hm_get_active().rowdist
    with nogil:
        for item in prange(na * nparts, num_threads=min(nthreads, na * nparts),
                         schedule="dynamic"):
            i = item // nparts
            lo = (item % nparts) * part_rows
            hi = min(lo + part_rows, nb)
            if hi > lo:
                rowdist(pa + i * nw, pb + lo * nw, hi - lo, nw, po + i * nb + lo)
    return out


# --------------------------------------------------------------------------------------------
# linear range scan, 1..8 needles per query

cdef void scan_range_item(const uint64_t *needles, int64_t q_lo, int64_t q_hi, int m,
                          const uint64_t *db, int64_t lo, int64_t hi, int nw, int radius,
                          HitList *hits, int64_t nparts, int64_t part) noexcept nogil:
    """Scan rows [lo, hi) for queries [q_lo, q_hi), block by block, appending hits."""
    cdef int32_t dmin[BLOCK_ROWS]
    cdef int8_t darg[BLOCK_ROWS]
    cdef const hm_impl *impl = hm_get_active()
    cdef int64_t b0, nb, q, i
    cdef HitList *h
    memset(darg, 0, sizeof(darg))
    b0 = lo
    while b0 < hi:
        nb = min(<int64_t> BLOCK_ROWS, hi - b0)
        for q in range(q_lo, q_hi):
            if m == 1:
                impl.rowdist(needles + q * nw, db + b0 * nw, nb, nw, dmin)
            else:
                impl.rowmin(needles + q * m * nw, m, db + b0 * nw, nb, nw, dmin, darg)
            h = &hits[q * nparts + part]
            for i in range(nb):
                if dmin[i] <= radius:
                    hits_push(h, b0 + i, dmin[i], darg[i])
        b0 += nb


cdef tuple scan_range(cnp.ndarray needles, cnp.ndarray database, int radius, int nthreads,
                      bint with_variants):
    cdef int64_t nq = needles.shape[0], n = database.shape[0]
    cdef int m = needles.shape[1], nw = database.shape[1] // 8
    cdef int64_t nparts = _split_parts(nq, n, nthreads)
    cdef int64_t part_rows = (n + nparts - 1) // nparts
    cdef int64_t nchunks = (nq + QUERY_CHUNK - 1) // QUERY_CHUNK
    cdef HitList *hits = hits_new(nq * nparts)
    cdef const uint64_t *pn = _words(needles)
    cdef const uint64_t *pd = _words(database)
    cdef int64_t item, chunk, part
    try:
        if radius >= 0 and n > 0:
            with nogil:
                for item in prange(nchunks * nparts, num_threads=min(nthreads, nchunks * nparts),
                         schedule="dynamic"):
                    chunk = item // nparts
                    part = item % nparts
                    scan_range_item(pn, chunk * QUERY_CHUNK, min((chunk + 1) * QUERY_CHUNK, nq),
                                    m, pd, part * part_rows, min((part + 1) * part_rows, n), nw,
                                    radius, hits, nparts, part)
        return hits_to_csr(hits, nq, nparts, with_variants)
    finally:
        hits_free(hits, nq * nparts)


def range_search(queries, database, radius, threads=None):
    """All database rows within distance <= radius of each query: (offsets, ids, distances)."""
    queries = _as_codes(queries, "queries")
    database = _as_codes(database, "database")
    _check_same_width(queries, database)
    return scan_range(queries[:, None, :], database, int(radius), _threads(threads), False)


def range_search_multi(needles, database, radius, threads=None):
    """Range search with up to 8 needles (e.g. dihedral variants) per query, one database pass.

    needles: (nq, m, nbytes), or (m, nbytes) for one query. A row is a hit when its minimum
    distance over the query's needles is <= radius. Returns (offsets, ids, distances, variants).
    """
    database = _as_codes(database, "database")
    needles = _as_needles(needles, database.shape[1])
    return scan_range(needles, database, int(radius), _threads(threads), True)


# --------------------------------------------------------------------------------------------
# many-needle scan with a radius per needle: hit rows with every needle's distance

cdef struct HitRows:
    int64_t *rows
    int32_t *dist  # m per hit
    int64_t n
    int64_t cap
    int64_t dist_cap  # int32 slots of dist (reused with another m: scan_bucket)
    int failed


cdef void scan_hits_part(const uint64_t *needles, int m, const int32_t *radii,
                         const uint64_t *db, int64_t lo, int64_t hi, int nw,
                         HitRows *out) noexcept nogil:
    """Rows [lo, hi) within some needle's radius, appended in ascending order to ``out``
    with the distance to every needle (computed for the hit rows only)."""
    cdef uint8_t bits[BLOCK_ROWS >> 3]
    cdef const hm_impl *impl = hm_get_active()
    cdef int64_t b0, nb, k, row, cap
    cdef uint8_t byte
    cdef int bit
    b0 = lo
    while b0 < hi:
        nb = min(<int64_t> BLOCK_ROWS, hi - b0)
        impl.rowany(needles, m, radii, db + b0 * nw, nb, nw, bits)
        for k in range((nb + 7) >> 3):
            byte = bits[k]
            while byte:
                bit = hm_ctz(byte)
                byte &= byte - 1
                row = b0 + 8 * k + bit
                if out.n == out.cap or (out.n + 1) * m > out.dist_cap:
                    cap = out.cap
                    if out.n == out.cap:
                        cap = 64 if out.cap == 0 else 2 * out.cap
                        if resize(<void **> &out.rows, cap * sizeof(int64_t)):
                            out.failed = 1
                            return
                    if resize(<void **> &out.dist, cap * m * sizeof(int32_t)):
                        out.failed = 1
                        return
                    out.cap, out.dist_cap = cap, cap * m
                out.rows[out.n] = row
                # the row against every needle: rowdist with the row as the query
                impl.rowdist(db + row * nw, needles, m, nw, out.dist + out.n * m)
                out.n += 1
        b0 += nb


def range_search_hits(needles, radii, database, threads=None):
    """One pass over ``database`` with any number of needles, each with its own radius.

    needles: (m, nbytes); radii: (m,) ints (a negative radius never holds). Returns
    ``(rows int64 (h,), distances int32 (h, m))``: the rows within ``radii[j]`` of some needle
    ``j``, ascending, with their distance to every needle. Built for a query's many needles
    over one stored role (the needle set is read once per block of rows, the database once).
    """
    database = _as_codes(database, "database")
    arr = np.ascontiguousarray(needles, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != database.shape[1]:
        raise ValueError(f"needles must have shape (m, {database.shape[1]}), "
                         f"got {np.shape(needles)}")
    cdef cnp.ndarray rad = np.ascontiguousarray(radii, dtype=np.int64)
    if rad.ndim != 1 or rad.shape[0] != arr.shape[0]:
        raise ValueError(f"radii must have shape ({arr.shape[0]},), got {np.shape(radii)}")
    rad = np.ascontiguousarray(np.clip(rad, -1, 1 << 20), dtype=np.int32)
    cdef int m = arr.shape[0], nw = database.shape[1] // 8
    cdef int64_t n = database.shape[0]
    if m == 0 or n == 0:
        return np.empty(0, np.int64), np.empty((0, m), np.int32)
    cdef int nthreads = _threads(threads)
    cdef int64_t nparts = _split_parts(1, n, nthreads)
    cdef int64_t part_rows = (n + nparts - 1) // nparts
    cdef HitRows *parts = <HitRows *> malloc(nparts * sizeof(HitRows))
    if parts == NULL:
        raise MemoryError()
    memset(parts, 0, nparts * sizeof(HitRows))
    cdef const uint64_t *pn = _words(arr)
    cdef const uint64_t *pd = _words(database)
    cdef const int32_t *pr = <const int32_t *> cnp.PyArray_DATA(rad)
    cdef int64_t part, total = 0, at = 0
    try:
        with nogil:
            for part in prange(nparts, num_threads=min(nthreads, nparts), schedule="static"):
                scan_hits_part(pn, m, pr, pd, part * part_rows,
                               min((part + 1) * part_rows, n), nw, &parts[part])
        for part in range(nparts):
            if parts[part].failed:
                raise MemoryError("out of memory collecting search hits")
            total += parts[part].n
        rows = np.empty(total, dtype=np.int64)
        dist = np.empty((total, m), dtype=np.int32)
        for part in range(nparts):
            if parts[part].n:
                memcpy(<int64_t *> cnp.PyArray_DATA(rows) + at, parts[part].rows,
                       parts[part].n * sizeof(int64_t))
                memcpy(<int32_t *> cnp.PyArray_DATA(dist) + at * m, parts[part].dist,
                       parts[part].n * m * sizeof(int32_t))
                at += parts[part].n
        return rows, dist
    finally:
        for part in range(nparts):
            free(parts[part].rows)
            free(parts[part].dist)
        free(parts)


# --------------------------------------------------------------------------------------------
# bucketed prefilter: rows sorted into buckets by a short key, only nearby buckets read

cdef struct HitPairs:
    int64_t *rows
    int32_t *needles
    int64_t n
    int64_t cap
    int failed


cdef int push_pair(HitPairs *out, int64_t row, int32_t needle) noexcept nogil:
    cdef int64_t cap
    if out.n == out.cap:
        cap = 256 if out.cap == 0 else 2 * out.cap
        if (resize(<void **> &out.rows, cap * sizeof(int64_t))
                or resize(<void **> &out.needles, cap * sizeof(int32_t))):
            out.failed = 1
            return 1
        out.cap = cap
    out.rows[out.n] = row
    out.needles[out.n] = needle
    out.n += 1
    return 0


cdef void scan_bucket(const uint64_t *needles, const int32_t *which, int m,
                      const int32_t *radii, const uint64_t *db, int64_t lo, int64_t hi, int nw,
                      HitRows *scratch, HitPairs *out) noexcept nogil:
    """Rows [lo, hi) within ``radii[j]`` of needle j (j < m, numbered ``which[j]``), appended
    in order to ``out`` as (row, needle number) pairs; ``scratch`` holds the hit rows."""
    cdef int64_t i
    cdef int j
    scratch.n = 0
    scan_hits_part(needles, m, radii, db, lo, hi, nw, scratch)
    if scratch.failed:
        out.failed = 1
        return
    for i in range(scratch.n):
        for j in range(m):
            if scratch.dist[i * m + j] <= radii[j]:
                if push_pair(out, scratch.rows[i], which[j]):
                    return


def bucket_range_search(needles, needle_keys, key_masks, offsets, database, int radius):
    """The (row, needle) pairs of a bucketed ``database`` where the row is within ``radius``
    of needle j and lies in one of the buckets ``needle_keys[j] ^ mask``, ``mask`` in
    ``key_masks``: (rows int64, needles int32), by row then needle. Bucket b holds rows
    ``offsets[b]:offsets[b + 1]`` (rows sorted by key); only the named buckets are read, in
    ascending order (each once, with every needle that names it), so a prefilter whose key
    is a few coarse bits reads a small share of the rows nearly sequentially
    (codeindex.BucketPrefilter).

    needles: (m, nbytes); needle_keys: (m,) ints; key_masks: (k,) ints, each below the
    bucket count; offsets: (buckets + 1,) int64 ascending from 0 to len(database)."""
    database = _as_codes(database, "database")
    arr = np.ascontiguousarray(needles, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[1] != database.shape[1]:
        raise ValueError(f"needles must have shape (m, {database.shape[1]}), "
                         f"got {np.shape(needles)}")
    cdef cnp.ndarray keys = np.ascontiguousarray(needle_keys, dtype=np.int64).reshape(-1)
    cdef cnp.ndarray masks = np.ascontiguousarray(key_masks, dtype=np.int64).reshape(-1)
    cdef cnp.ndarray off = np.ascontiguousarray(offsets, dtype=np.int64).reshape(-1)
    cdef int m = arr.shape[0], nw = database.shape[1] // 8
    cdef int64_t n = database.shape[0], buckets = off.shape[0] - 1
    if keys.shape[0] != m:
        raise ValueError(f"{m} needles but {keys.shape[0]} keys")
    if buckets < 1 or off[0] != 0 or off[buckets] != n:
        raise ValueError("offsets must ascend from 0 to the number of rows")
    if m and ((keys < 0).any() or (keys >= buckets).any()):
        raise ValueError(f"needle keys must lie in [0, {buckets})")
    if len(masks) and ((masks < 0).any() or (masks >= buckets).any()):
        raise ValueError(f"key masks must lie in [0, {buckets})")
    if (buckets & (buckets - 1)) != 0:
        raise ValueError("the bucket count must be a power of two (keys are bit strings)")
    empty = np.empty(0, np.int64), np.empty(0, np.int32)
    if m == 0 or n == 0 or radius < 0 or len(masks) == 0:
        return empty
    cdef const int64_t *po = <const int64_t *> cnp.PyArray_DATA(off)
    cdef int64_t b
    cdef bint descending = False
    with nogil:
        for b in range(buckets):
            if po[b + 1] < po[b]:
                descending = True
                break
    if descending:
        raise ValueError("offsets must ascend from 0 to the number of rows")
    # which needles (32 at a time: bit j of a uint32) name each bucket
    cdef cnp.ndarray wanted = np.zeros(buckets, dtype=np.uint32)
    cdef cnp.ndarray subset = np.empty((32, nw), dtype=np.uint64)
    cdef cnp.ndarray numbers = np.empty(32, dtype=np.int32)
    cdef cnp.ndarray radii = np.full(32, radius, dtype=np.int32)
    cdef uint32_t *pw = <uint32_t *> cnp.PyArray_DATA(wanted)
    cdef uint64_t *ps = <uint64_t *> cnp.PyArray_DATA(subset)
    cdef int32_t *pnum = <int32_t *> cnp.PyArray_DATA(numbers)
    cdef const int32_t *pr = <const int32_t *> cnp.PyArray_DATA(radii)
    cdef const uint64_t *pn = _words(arr)
    cdef const uint64_t *pd = _words(database)
    cdef const int64_t *pk = <const int64_t *> cnp.PyArray_DATA(keys)
    cdef const int64_t *pm = <const int64_t *> cnp.PyArray_DATA(masks)
    cdef int64_t nmasks = masks.shape[0], t
    cdef int j, j0, k, count
    cdef uint32_t bits
    cdef HitPairs out
    cdef HitRows scratch
    memset(&out, 0, sizeof(HitPairs))
    memset(&scratch, 0, sizeof(HitRows))
    chunks = []
    try:
        for j0 in range(0, m, 32):
            count = min(32, m - j0)
            memset(pw, 0, buckets * sizeof(uint32_t))
            out.n = 0
            with nogil:
                for j in range(count):
                    for t in range(nmasks):
                        pw[pk[j0 + j] ^ pm[t]] |= (<uint32_t> 1) << j
                for b in range(buckets):
                    bits = pw[b]
                    if bits == 0 or po[b] == po[b + 1]:
                        continue
                    k = 0
                    while bits:
                        j = hm_ctz(bits)
                        bits &= bits - 1
                        memcpy(ps + k * nw, pn + (j0 + j) * nw, nw * sizeof(uint64_t))
                        pnum[k] = j0 + j
                        k += 1
                    scan_bucket(ps, pnum, k, pr, pd, po[b], po[b + 1], nw, &scratch, &out)
                    if out.failed:
                        break
            if out.failed:
                raise MemoryError("out of memory collecting prefilter hits")
            rows = np.empty(out.n, dtype=np.int64)
            which = np.empty(out.n, dtype=np.int32)
            if out.n:
                memcpy(<int64_t *> cnp.PyArray_DATA(rows), out.rows, out.n * sizeof(int64_t))
                memcpy(<int32_t *> cnp.PyArray_DATA(which), out.needles,
                       out.n * sizeof(int32_t))
            chunks.append((rows, which))
        if len(chunks) == 1:  # by row then needle already: buckets in order, each read once
            return chunks[0]
        rows = np.concatenate([c[0] for c in chunks])
        which = np.concatenate([c[1] for c in chunks])
        order = np.lexsort((which, rows))
        return rows[order], which[order]
    finally:
        free(out.rows)
        free(out.needles)
        free(scratch.rows)
        free(scratch.dist)


# --------------------------------------------------------------------------------------------
# verification of candidate rows

def range_search_multi_candidates(needles, database, cand_offsets, cand_rows, radius,
                                  threads=None):
    """range_search_multi restricted to candidate rows (CSR: query q's candidates are
    cand_rows[cand_offsets[q]:cand_offsets[q+1]], any order, repeats allowed).

    Verifies candidates proposed by a sub-linear structure. Same result format.
    """
    database = _as_codes(database, "database")
    needles = _as_needles(needles, database.shape[1])
    cdef cnp.ndarray coff = np.ascontiguousarray(cand_offsets, dtype=np.int64)
    cdef cnp.ndarray crow = np.ascontiguousarray(cand_rows, dtype=np.int64)
    cdef int64_t nq = needles.shape[0], n = database.shape[0]
    if coff.shape[0] != nq + 1 or (nq and (coff[0] != 0 or coff[nq] != crow.shape[0]
                                           or np.any(np.diff(coff) < 0))):
        raise ValueError("cand_offsets must be a CSR offsets array of length nq + 1")
    if crow.shape[0] and (crow.min() < 0 or crow.max() >= n):
        raise IndexError("candidate row out of range")
    cdef int m = needles.shape[1], nw = database.shape[1] // 8
    cdef int r = int(radius)
    cdef int nthreads = _threads(threads)
    cdef HitList *hits = hits_new(nq)
    cdef const uint64_t *pn = _words(needles)
    cdef const uint64_t *pd = _words(database)
    cdef const int64_t *po = <const int64_t *> cnp.PyArray_DATA(coff)
    cdef const int64_t *pr = <const int64_t *> cnp.PyArray_DATA(crow)
    cdef int64_t q
    try:
        if r >= 0:
            with nogil:
                for q in prange(nq, num_threads=min(nthreads, nq), schedule="dynamic"):
                    verify_candidates(pn + q * m * nw, m, pd, nw, pr + po[q], po[q + 1] - po[q],
                                      r, &hits[q])
        result = hits_to_csr(hits, nq, 1, True)
    finally:
        hits_free(hits, nq)
    return sort_unique_hits(*result)


cdef void verify_candidates(const uint64_t *needles, int m, const uint64_t *db, int nw,
                            const int64_t *rows, int64_t count, int radius,
                            HitList *out) noexcept nogil:
    """Push (row, min distance, argmin needle) for candidates within radius (unsorted):
    the MIH verifier with every candidate's needle set = all m (1..8) needles."""
    cdef uint8_t *masks = <uint8_t *> malloc(max(count, 1))
    if masks == NULL:
        out.failed = 1
        return
    memset(masks, (1 << m) - 1, count)
    verify_candidate_sets(needles, db, nw, rows, masks, count, radius, out)
    free(masks)


@cython.wraparound(True)
def sort_unique_hits(offsets, rows, dist, var):
    """Sort each query's hits by row; of repeated rows keep the smallest distance (lowest
    variant on ties). Used after candidate verification, where rows may repeat."""
    nq = offsets.shape[0] - 1
    query = np.repeat(np.arange(nq, dtype=np.int64), np.diff(offsets))
    order = np.lexsort((var, dist, rows, query))
    query, rows, dist, var = query[order], rows[order], dist[order], var[order]
    first = np.ones(rows.shape[0], dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (query[1:] != query[:-1])
    query, rows, dist, var = query[first], rows[first], dist[first], var[first]
    new_offsets = np.zeros(nq + 1, dtype=np.int64)
    np.cumsum(np.bincount(query, minlength=nq), out=new_offsets[1:])
    return new_offsets, rows, dist, var


# --------------------------------------------------------------------------------------------
# top-k

cdef inline void heap_sift_down(int32_t *hd, int64_t *hr, int64_t k, int64_t at) noexcept nogil:
    """Max-heap on (distance, row): restore order below `at`."""
    cdef int64_t child, big
    cdef int32_t td
    cdef int64_t tr
    while True:
        child = 2 * at + 1
        if child >= k:
            return
        big = child
        if child + 1 < k and (hd[child + 1] > hd[child] or
                              (hd[child + 1] == hd[child] and hr[child + 1] > hr[child])):
            big = child + 1
        if hd[big] < hd[at] or (hd[big] == hd[at] and hr[big] < hr[at]):
            return
        td = hd[at]; hd[at] = hd[big]; hd[big] = td
        tr = hr[at]; hr[at] = hr[big]; hr[big] = tr
        at = big


cdef void topk_item(const uint64_t *queries, int64_t q_lo, int64_t q_hi, const uint64_t *db,
                    int64_t lo, int64_t hi, int nw, int64_t k, const uint8_t *live,
                    int32_t *heap_d, int64_t *heap_r, int64_t nparts,
                    int64_t part) noexcept nogil:
    """Keep the k best (distance, row) of rows [lo, hi) per query in a max-heap.

    Heaps start full of (PAD_DISTANCE, row past the end) so no fill phase is needed; rows
    arrive in ascending order, so a row enters only when strictly closer than the worst kept
    (that is what breaks ties by lower row)."""
    cdef int32_t d[BLOCK_ROWS]
    cdef hm_rowdist_fn rowdist = hm_get_active().rowdist
    cdef int64_t b0, nb, q, i
    cdef int32_t *hd
    cdef int64_t *hr
    b0 = lo
    while b0 < hi:
        nb = min(<int64_t> BLOCK_ROWS, hi - b0)
        for q in range(q_lo, q_hi):
            rowdist(queries + q * nw, db + b0 * nw, nb, nw, d)
            hd = heap_d + (q * nparts + part) * k
            hr = heap_r + (q * nparts + part) * k
            for i in range(nb):
                if d[i] < hd[0] and (live == NULL or live[b0 + i]):
                    hd[0] = d[i]
                    hr[0] = b0 + i
                    heap_sift_down(hd, hr, k, 0)
        b0 += nb


def topk(queries, database, k, threads=None, live=None):
    """The k nearest database rows of each query: (ids (nq, k) int64, distances (nq, k) int32),
    sorted by (distance, id). Fewer than k eligible rows: padded with id -1 and
    distance PAD_DISTANCE. ``live`` (optional bool/uint8 per database row) excludes rows."""
    queries = _as_codes(queries, "queries")
    database = _as_codes(database, "database")
    _check_same_width(queries, database)
    cdef int64_t kk = int(k)
    if kk < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    cdef int64_t nq = queries.shape[0], n = database.shape[0]
    cdef cnp.ndarray live_arr
    cdef const uint8_t *plive = NULL
    if live is not None:
        live_arr = np.ascontiguousarray(live).astype(np.uint8, copy=False)
        if live_arr.shape[0] != n:
            raise ValueError("live must have one entry per database row")
        plive = <const uint8_t *> cnp.PyArray_DATA(live_arr)
    cdef int nthreads = _threads(threads)
    cdef int nw = queries.shape[1] // 8
    cdef int64_t nparts = _split_parts(nq, n, nthreads)
    cdef int64_t part_rows = (n + nparts - 1) // nparts
    cdef int64_t nchunks = (nq + QUERY_CHUNK - 1) // QUERY_CHUNK
    sentinel_row = np.iinfo(np.int64).max
    heap_d = np.full((nq, nparts * kk), PAD_DISTANCE, dtype=np.int32)
    heap_r = np.full((nq, nparts * kk), sentinel_row, dtype=np.int64)
    cdef int32_t *phd = <int32_t *> cnp.PyArray_DATA(heap_d)
    cdef int64_t *phr = <int64_t *> cnp.PyArray_DATA(heap_r)
    cdef const uint64_t *pq = _words(queries)
    cdef const uint64_t *pd = _words(database)
    cdef int64_t item, chunk, part
    if kk > 0 and n > 0:
        with nogil:
            for item in prange(nchunks * nparts, num_threads=min(nthreads, nchunks * nparts),
                         schedule="dynamic"):
                chunk = item // nparts
                part = item % nparts
                topk_item(pq, chunk * QUERY_CHUNK, min((chunk + 1) * QUERY_CHUNK, nq), pd,
                          part * part_rows, min((part + 1) * part_rows, n), nw, kk, plive,
                          phd, phr, nparts, part)
    order = np.lexsort((heap_r, heap_d), axis=1)[:, :kk]
    ids = np.take_along_axis(heap_r, order, axis=1)
    dist = np.take_along_axis(heap_d, order, axis=1)
    ids[ids == sentinel_row] = -1
    return ids, dist


# --------------------------------------------------------------------------------------------
# multi-index hashing (MIH): exact sub-linear range search
#
# The code's bits are split into M substrings (widths differ by at most one bit; bit j of a
# code is bit j % 64 of uint64 word j // 64). Table t maps each substring value to the rows
# holding it, as a direct-addressed CSR: rows_t[offsets_t[key]:offsets_t[key + 1]].
# Pigeonhole: write r = s*M + a with 0 <= a < M. If every table t <= a differed by > s bits
# and every other table by > s - 1 bits, the total would exceed r; so probing tables
# 0..a at radius s and the rest at radius s - 1 finds every row within r.

cdef inline uint32_t substring_key(const uint64_t *code, int start, int width) noexcept nogil:
    cdef int w = start >> 6, sh = start & 63
    cdef uint64_t x = code[w] >> sh
    if sh + width > 64:
        x |= code[w + 1] << (64 - sh)
    return <uint32_t> (x & ((<uint64_t> 1 << width) - 1))


SPLIT_MIXED = 2


@cython.wraparound(True)
def mih_layout(int nbits, int nsub, int split_parity=0):
    """Bit starts and widths of nsub substrings of nbits bits, the wider ones first.

    split_parity (256-bit codes only): 1 (True): the substrings are of the parity-split codes
    (pdq_parity_split): each lies inside one 64-bit parity class (word), the nsub tables
    spread over the 4 classes as evenly as possible (extra tables to classes 3, 0, 1).
    SPLIT_MIXED (2): the plain widths, over the pdq_parity_mix codes (see pdq_mix_tables)."""
    if split_parity == SPLIT_MIXED:
        if nbits != 256 or nsub < 4:
            raise ValueError("split_parity layouts need 256-bit codes and at least 4 substrings")
        pdq_mix_tables(nsub)  # raises if the widths leave no mixed layout
        split_parity = 0
    if not split_parity:
        base, extra = divmod(nbits, nsub)
        widths = np.array([base + 1] * extra + [base] * (nsub - extra), dtype=np.int32)
        starts = np.zeros(nsub, dtype=np.int32)
        starts[1:] = np.cumsum(widths)[:-1]
        return starts, widths
    if nbits != 256 or nsub < 4:
        raise ValueError("split_parity layouts need 256-bit codes and at least 4 substrings")
    tables = []  # (width, class order, start)
    for rank, cls in enumerate((3, 0, 1, 2)):
        k = nsub // 4 + (rank < nsub % 4)
        base, extra = divmod(64, k)
        start = 64 * cls
        for i in range(k):
            w = base + (i < extra)
            tables.append((-w, rank, start))
            start += w
    tables.sort()
    starts = np.array([t[2] for t in tables], dtype=np.int32)
    widths = np.array([-t[0] for t in tables], dtype=np.int32)
    return starts, widths


cdef uint8_t _NIBBLE[2][256]
cdef int _v
for _v in range(256):
    _NIBBLE[0][_v] = (_v & 1) | ((_v >> 1) & 2) | ((_v >> 2) & 4) | ((_v >> 3) & 8)
    _NIBBLE[1][_v] = ((_v >> 1) & 1) | ((_v >> 2) & 2) | ((_v >> 3) & 4) | ((_v >> 4) & 8)


cdef inline void parity_split_one(const uint8_t *c, uint64_t *out) noexcept nogil:
    """PDQ bit k (row i = k // 16, column j = k % 16) is bit c = k % 8 of byte 31 - k // 8.
    Word 2 * (i % 2) + j % 2 of the output collects one parity class: the 16 bytes of its row
    parity in byte order, 4 bits (the columns of its parity, ascending) from each."""
    cdef int b, ip, sh
    out[0] = 0
    out[1] = 0
    out[2] = 0
    out[3] = 0
    for b in range(32):
        ip = ((31 - b) >> 1) & 1
        sh = 4 * ((b >> 2) * 2 + (b & 1))
        out[2 * ip] |= (<uint64_t> _NIBBLE[0][c[b]]) << sh
        out[2 * ip + 1] |= (<uint64_t> _NIBBLE[1][c[b]]) << sh


def pdq_parity_split(codes, threads=None):
    """Permute the bits of 256-bit PDQ codes so that each uint64 word holds one parity class
    (row i % 2, column j % 2) of the 16x16 DCT sign matrix. The 8 dihedral variants of a PDQ
    hash complement whole classes and/or transpose: within a class they take few values."""
    codes = _as_codes(codes, "codes")
    if codes.shape[1] != 32:
        raise ValueError("parity split needs 256-bit codes")
    cdef int64_t n = codes.shape[0], i
    out = np.empty((n, 32), dtype=np.uint8)
    cdef const uint8_t *pc = <const uint8_t *> cnp.PyArray_DATA(codes)
    cdef uint64_t *po = <uint64_t *> cnp.PyArray_DATA(out)
    cdef int nthreads = _threads(threads) if n >= 100_000 else 1
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="static"):
            parity_split_one(pc + i * 32, po + i * 4)
    return out


def pdq_mix_tables(int nsub):
    """The tables of the mixed parity layout: [(class, own start, own width, class-3 start,
    class-3 width)], in the order (and with the widths) of the plain mih_layout(256, nsub).

    Bits of the (odd, odd) class (word 3 of pdq_parity_split) are the same in the 4
    non-transposed dihedral variants, so they can join a table of any one other class
    without splitting its keys further. The widest tables (probed at the larger pigeonhole
    radius) take only class-3 bits, as many as fit while each of the classes 0, 1, 2 still
    has >= 64 bits of tables (round robin over the rest, widest first); every other table
    takes an even share of its class's 64 bits and fills up with class-3 bits."""
    if nsub < 4:
        raise ValueError("split_parity layouts need 256-bit codes and at least 4 substrings")
    _, wd = mih_layout(256, nsub, 0)
    widths = [int(w) for w in wd]
    for pure in range(nsub, -1, -1):
        if sum(widths[:pure]) > 64:
            continue
        cls = [3] * pure + [i % 3 for i in range(nsub - pure)]
        if all(sum(w for w, c in zip(widths, cls) if c == k) >= 64 for k in range(3)):
            break
    else:
        raise ValueError(f"no mixed parity layout of {nsub} tables")
    own = [0] * nsub
    for k in range(3):
        mine = sorted((widths[t], t) for t in range(nsub) if cls[t] == k)  # narrowest first
        left = 64
        for i, (w, t) in enumerate(mine):
            own[t] = min(w, -(-left // (len(mine) - i)))
            left -= own[t]
    at = [0, 0, 0, 0]
    out = []
    for t in range(nsub):
        c = cls[t]
        o = widths[t] if c == 3 else own[t]
        start = 64 * c + at[c]
        at[c] += o
        fill = widths[t] - o if c != 3 else 0
        out.append((c, start, o, 64 * 3 + at[3], fill))
        at[3] += fill
    assert at == [64, 64, 64, 64]
    return out


cdef inline uint64_t bits_at(const uint64_t *code, int start, int width) noexcept nogil:
    """Bits [start, start + width) of a 256-bit code (width 1..64), bit start lowest."""
    cdef int w = start >> 6, sh = start & 63
    cdef uint64_t x = code[w] >> sh
    if sh and sh + width > 64:
        x |= code[w + 1] << (64 - sh)
    if width < 64:
        x &= (<uint64_t> 1 << width) - 1
    return x


cdef inline void put_bits(uint64_t *out, int at, uint64_t x, int width) noexcept nogil:
    cdef int w = at >> 6, sh = at & 63
    out[w] |= x << sh
    if sh and sh + width > 64:
        out[w + 1] |= x >> (64 - sh)


_MIX_SEGMENTS = {}  # nsub -> (source start, width) of each run of pdq_parity_mix's bits


def pdq_parity_mix(codes, int nsub, threads=None):
    """The codes the SPLIT_MIXED layout of nsub tables addresses: the pdq_parity_split codes
    with their bits regrouped so that table t of pdq_mix_tables(nsub) is contiguous (own bits
    low, class-3 bits above)."""
    codes = _as_codes(codes, "codes")
    if codes.shape[1] != 32:
        raise ValueError("parity split needs 256-bit codes")
    cdef cnp.ndarray seg = _mix_segments(nsub)
    cdef int64_t n = codes.shape[0], i
    out = np.empty((n, 32), dtype=np.uint8)
    cdef const uint8_t *pc = <const uint8_t *> cnp.PyArray_DATA(codes)
    cdef uint64_t *po = <uint64_t *> cnp.PyArray_DATA(out)
    cdef const int32_t *ps = <const int32_t *> cnp.PyArray_DATA(seg)
    cdef int nseg = seg.shape[0]
    cdef int nthreads = _threads(threads) if n >= 100_000 else 1
    with nogil:
        for i in prange(n, num_threads=nthreads, schedule="static"):
            parity_mix_one(pc + i * 32, po + i * 4, ps, nseg)
    return out


cdef cnp.ndarray _mix_segments(int nsub):
    cdef cnp.ndarray seg = _MIX_SEGMENTS.get(nsub)
    if seg is None:
        segs = []
        for c, s0, w0, s3, w3 in pdq_mix_tables(nsub):
            for s_, w_ in ((s0, w0), (s3, w3)):
                if w_:
                    segs.append((s_, w_))
        seg = _MIX_SEGMENTS[nsub] = np.array(segs, dtype=np.int32).reshape(-1, 2)
    return seg


cdef inline void parity_mix_one(const uint8_t *c, uint64_t *out, const int32_t *segs,
                                int nseg) noexcept nogil:
    cdef uint64_t split[4]
    cdef int k, at = 0
    parity_split_one(c, split)
    out[0] = 0
    out[1] = 0
    out[2] = 0
    out[3] = 0
    for k in range(nseg):
        put_bits(out, at, bits_at(split, segs[2 * k], segs[2 * k + 1]), segs[2 * k + 1])
        at += segs[2 * k + 1]


def _key_codes(codes, int split_parity, int nsub, threads):
    if split_parity == SPLIT_MIXED:
        return pdq_parity_mix(codes, nsub, threads)
    if split_parity:
        return pdq_parity_split(codes, threads)
    return codes


@cython.wraparound(True)
def mih_table_starts(widths):
    """Where each table's offsets begin in the concatenated offsets array (length M + 1)."""
    sizes = (np.int64(1) << np.asarray(widths, dtype=np.int64)) + 1
    out = np.zeros(len(sizes) + 1, dtype=np.int64)
    np.cumsum(sizes, out=out[1:])
    return out


@cython.wraparound(True)
def mih_build(codes, starts, widths, threads=None, int split_parity=0):
    """Build the MIH tables: (offsets uint32 concatenated per table, rows uint32 (M, n)).

    Counting sort per table (O(n + 2^width)), rows ascending within each bucket.
    split_parity: starts/widths address the pdq_parity_split codes (True) or the
    pdq_parity_mix codes (SPLIT_MIXED)."""
    codes = _as_codes(codes, "codes")
    if split_parity:
        codes = _key_codes(codes, split_parity, len(starts), threads)
    cdef cnp.ndarray st = np.ascontiguousarray(starts, dtype=np.int32)
    cdef cnp.ndarray wd = np.ascontiguousarray(widths, dtype=np.int32)
    cdef int nsub = st.shape[0]
    cdef int64_t n = codes.shape[0]
    cdef int nw = codes.shape[1] // 8
    if n >= 2 ** 32 - 1:
        raise ValueError("MIH tables hold at most 2**32 - 2 rows")
    if np.any(wd < 1) or np.any(wd > 32) or (nsub and st[nsub - 1] + wd[nsub - 1] > nw * 64):
        raise ValueError("substrings must lie inside the code and be 1..32 bits wide")
    table_starts = mih_table_starts(wd)
    offsets = np.zeros(table_starts[-1], dtype=np.uint32)
    rows = np.empty((nsub, n), dtype=np.uint32)
    cdef const uint64_t *pc = _words(codes)
    cdef uint32_t *po = <uint32_t *> cnp.PyArray_DATA(offsets)
    cdef uint32_t *pr = <uint32_t *> cnp.PyArray_DATA(rows)
    cdef int64_t *pts = <int64_t *> cnp.PyArray_DATA(table_starts)
    cdef int32_t *pst = <int32_t *> cnp.PyArray_DATA(st)
    cdef int32_t *pwd = <int32_t *> cnp.PyArray_DATA(wd)
    cdef int t, failed = 0
    cdef int nthreads = _threads(threads)
    with nogil:
        for t in prange(nsub, num_threads=nthreads, schedule="dynamic"):
            failed += build_table(pc, n, nw, pst[t], pwd[t], po + pts[t], pr + t * n) != 0
    if failed:
        raise MemoryError("out of memory building MIH tables")
    return offsets, rows


cdef int build_table(const uint64_t *codes, int64_t n, int nw, int start, int width,
                     uint32_t *offsets, uint32_t *rows) noexcept nogil:
    cdef int64_t nkeys = (<int64_t> 1) << width, i
    cdef uint32_t key
    cdef uint32_t *fill = <uint32_t *> malloc(nkeys * sizeof(uint32_t))
    if fill == NULL:
        return -1
    for i in range(n):
        offsets[substring_key(codes + i * nw, start, width) + 1] += 1
    for i in range(nkeys):
        offsets[i + 1] += offsets[i]
    memcpy(fill, offsets, nkeys * sizeof(uint32_t))
    for i in range(n):
        key = substring_key(codes + i * nw, start, width)
        rows[fill[key]] = <uint32_t> i
        fill[key] += 1
    free(fill)
    return 0


cdef struct Probe:
    int32_t table
    uint8_t needles  # bit j: needle j's substring key is `key` (identical probes merged)
    uint32_t key
    int64_t lo       # bucket bounds, filled in stage 2
    int64_t hi


cdef struct KeyGroup:
    int32_t table
    int32_t radius   # probe radius around key (-1: not probed)
    uint32_t key
    uint8_t needles  # the needles whose substring key in this table is `key`
    double step      # model cost of raising radius by one


cdef struct HeapItem:
    double ratio
    int32_t group


cdef struct MihScratch:
    Probe *probes
    int64_t nprobes, probes_cap
    KeyGroup *groups
    int64_t ngroups, groups_cap
    HeapItem *heap
    int64_t nheap, heap_cap
    int64_t *cand
    uint8_t *cand_needles
    int64_t ncand, cand_cap, cand_needles_cap
    int failed


# The probe planner's cost model (the same constants as hashmatch.codeindex's): a probe
# (bucket lookup) and a candidate (verification of a random row) cost this many ns.
MIH_NS_PER_PROBE = 25.0
MIH_NS_PER_CANDIDATE = 45.0
DEF NS_PER_PROBE = 25.0
DEF NS_PER_CANDIDATE = 45.0

cdef double _BINOM[65][65]  # exact binomials (as uint64), rounded once to double
cdef uint64_t _binom_u[65][65]
cdef int _bi, _bk
for _bi in range(65):
    for _bk in range(65):
        _binom_u[_bi][_bk] = 0
    _binom_u[_bi][0] = 1
    for _bk in range(1, _bi + 1):
        _binom_u[_bi][_bk] = _binom_u[_bi - 1][_bk - 1] + _binom_u[_bi - 1][_bk]
    for _bk in range(65):
        _BINOM[_bi][_bk] = <double> _binom_u[_bi][_bk]


cdef inline double probe_unit_cost(int64_t n, int width) noexcept nogil:
    """Model cost of one probe of a table of `width` bits over n rows (its expected bucket)."""
    return NS_PER_PROBE + NS_PER_CANDIDATE * ldexp(<double> n, -width)


cdef inline double ball_cost(int64_t n, int width, int radius) noexcept nogil:
    cdef double keys = 0.0
    cdef int i
    for i in range(min(radius, width) + 1):
        keys = keys + _BINOM[width][i]
    return keys * probe_unit_cost(n, width)


cdef uint8_t _POP8[256]
for _bi in range(256):
    _POP8[_bi] = bin(_bi).count("1")


cdef inline bint heap_less(double ra, int32_t ga, double rb, int32_t gb) noexcept nogil:
    return ra < rb or (ra == rb and ga < gb)


cdef inline void heap_push(MihScratch *s, double ratio, int32_t group) noexcept nogil:
    cdef int64_t i = s.nheap, parent
    s.nheap += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not heap_less(ratio, group, s.heap[parent].ratio, s.heap[parent].group):
            break
        s.heap[i] = s.heap[parent]
        i = parent
    s.heap[i].ratio = ratio
    s.heap[i].group = group


cdef inline HeapItem heap_pop(MihScratch *s) noexcept nogil:
    cdef HeapItem top = s.heap[0], last
    cdef int64_t i = 0, child
    s.nheap -= 1
    last = s.heap[s.nheap]
    while True:
        child = 2 * i + 1
        if child >= s.nheap:
            break
        if child + 1 < s.nheap and heap_less(s.heap[child + 1].ratio, s.heap[child + 1].group,
                                             s.heap[child].ratio, s.heap[child].group):
            child += 1
        if not heap_less(s.heap[child].ratio, s.heap[child].group, last.ratio, last.group):
            break
        s.heap[i] = s.heap[child]
        i = child
    if s.nheap:
        s.heap[i] = last
    return top


cdef int mih_plan(const uint64_t *key_needles, int m, int nw, int radius, int nsub,
                  const int32_t *starts, const int32_t *widths, int64_t n,
                  MihScratch *s) noexcept nogil:
    """The probe plan of one query: s.groups = the distinct substring keys of each table
    (table ascending, keys in order of their first needle) with the needles sharing each
    key and the radius it is probed at. Returns -1 when out of memory.

    Pigeonhole for a needle holds for any per-table radii rho_t with sum_t (rho_t + 1) >=
    radius + 1 (a row differing by > rho_t bits in every table differs by > radius bits in
    all), or with one table enumerated entirely (rho_t = width: every row is a candidate).
    One needle: the classic plan (radius // nsub + 1 on the first radius % nsub + 1 tables,
    radius // nsub on the rest: the wider tables, which are the cheaper ones to widen).
    Several needles: raising a key's radius serves every needle sharing that key, so the
    plan is a covering problem. Greedy from the classic floor (every key at radius // nsub
    - 1): repeatedly raise the key with the lowest model cost per still-short needle it
    serves (the model: probe_unit_cost per key probed). The classic plan applied to every
    key is kept when the model says it is cheaper (a safeguard: the greedy is not optimal
    in general). Real PDQ dihedral needles at 10M codes: ~12 % fewer probes and ~6 % fewer
    candidates than the classic plan per key (benchmarks/RESULTS.md)."""
    cdef int s_rad = radius // nsub, a = radius % nsub
    cdef int t, j, g, g0, helped, floor_
    cdef int32_t need[8]
    cdef uint32_t key, open_
    cdef double fixed_cost = 0.0, greedy_cost = 0.0, ratio
    cdef KeyGroup *kg
    cdef HeapItem item
    s.ngroups = 0
    if grow(<void **> &s.groups, &s.groups_cap, <int64_t> nsub * m, sizeof(KeyGroup)):
        return -1
    for t in range(nsub):
        g0 = s.ngroups
        for j in range(m):
            key = substring_key(key_needles + j * nw, starts[t], widths[t])
            for g in range(g0, s.ngroups):
                if s.groups[g].key == key:
                    s.groups[g].needles |= <uint8_t> (1 << j)
                    break
            else:
                kg = &s.groups[s.ngroups]
                kg.table = t
                kg.key = key
                kg.needles = <uint8_t> (1 << j)
                kg.radius = s_rad if t <= a else s_rad - 1
                if radius < 0:
                    kg.radius = -1
                s.ngroups += 1
    if m == 1 or radius < 0:
        return 0
    if grow(<void **> &s.heap, &s.heap_cap, s.ngroups, sizeof(HeapItem)):
        return -1
    # every key starts at the floor every needle gets in every table under the classic plan
    # (radius // nsub - 1, at most the full table); the greedy adds the remaining steps
    open_ = (<uint32_t> 1 << m) - 1
    for j in range(m):
        need[j] = radius + 1
    for t in range(nsub):
        floor_ = min(s_rad - 1, widths[t])
        for j in range(m):
            need[j] -= floor_ + 1
        if floor_ == widths[t]:
            open_ = 0  # a whole table is probed: every row is a candidate of every needle
    for j in range(m):
        if need[j] <= 0:
            open_ &= ~(<uint32_t> 1 << j)
    # lazy greedy: a key's cost per needle served only grows (its next step costs more,
    # fewer of its needles stay short), so a popped key whose refreshed cost still beats
    # the heap's top is the eager greedy's choice (ties: the lower key index)
    s.nheap = 0
    for g in range(s.ngroups):
        kg = &s.groups[g]
        fixed_cost = fixed_cost + ball_cost(n, widths[kg.table], kg.radius)
        kg.radius = min(s_rad - 1, widths[kg.table])
        greedy_cost = greedy_cost + ball_cost(n, widths[kg.table], kg.radius)
        if kg.radius < widths[kg.table]:
            kg.step = _BINOM[widths[kg.table]][kg.radius + 1] * probe_unit_cost(
                n, widths[kg.table])
            helped = _POP8[kg.needles & open_]
            if helped:
                heap_push(s, kg.step / helped, g)
    while open_:
        if s.nheap == 0:  # cannot happen: an open needle has a key below full width
            return -1
        item = heap_pop(s)
        kg = &s.groups[item.group]
        helped = _POP8[kg.needles & open_]
        if helped == 0:
            continue
        ratio = kg.step / helped
        if ratio != item.ratio and s.nheap and heap_less(s.heap[0].ratio, s.heap[0].group,
                                                        ratio, item.group):
            heap_push(s, ratio, item.group)
            continue
        kg.radius += 1
        greedy_cost = greedy_cost + kg.step
        for j in range(m):
            if (kg.needles >> j) & 1:
                need[j] -= 1
                if need[j] <= 0 or kg.radius == widths[kg.table]:
                    open_ &= ~(<uint32_t> 1 << j)
        if kg.radius < widths[kg.table]:
            kg.step = _BINOM[widths[kg.table]][kg.radius + 1] * probe_unit_cost(
                n, widths[kg.table])
            helped = _POP8[kg.needles & open_]
            if helped:
                heap_push(s, kg.step / helped, item.group)
    if fixed_cost < greedy_cost:
        for g in range(s.ngroups):
            t = s.groups[g].table
            s.groups[g].radius = s_rad if t <= a else s_rad - 1
    return 0


# How far ahead each stage prefetches. Enough independent misses in flight to cover the
# memory latency (~100 ns on this class of machine), few enough to fit the fill buffers.
DEF PREFETCH_AHEAD = 16


cdef inline int grow(void **p, int64_t *cap, int64_t need, size_t item) noexcept nogil:
    cdef int64_t c = cap[0]
    cdef void *q
    if need <= c:
        return 0
    while c < need:
        c = 256 if c == 0 else 2 * c
    q = realloc(p[0], c * item)
    if q == NULL:
        return -1
    p[0] = q
    cap[0] = c
    return 0


cdef inline int64_t ball_size(int width, int radius) noexcept nogil:
    """Keys within `radius` bits of a `width`-bit key."""
    cdef int64_t total = 0
    cdef int i
    for i in range(min(radius, width) + 1):
        total += <int64_t> _binom_u[width][i]
    return total


cdef void enumerate_probes(Probe *out, int64_t *at, int table, uint8_t needles, uint32_t key,
                           int width, int radius, int from_bit) noexcept nogil:
    """Write every key within `radius` bits of `key`, flipping only bits >= from_bit, to
    out[at[0]:] (room reserved by the caller: ball_size)."""
    cdef int b
    cdef Probe *pr = &out[at[0]]
    pr.table = table
    pr.needles = needles
    pr.key = key
    at[0] += 1
    if radius == 0:
        return
    for b in range(from_bit, width):
        enumerate_probes(out, at, table, needles, key ^ (<uint32_t> 1 << b), width,
                         radius - 1, b + 1)


cdef void mih_query(const uint64_t *needles, const uint64_t *key_needles, int m,
                    const uint64_t *codes, int nw, int radius,
                    int nsub, const int32_t *starts, const int32_t *widths,
                    const int64_t *table_starts, const uint32_t *offsets, const uint32_t *rows,
                    int64_t n, MihScratch *s, HitList *out) noexcept nogil:
    """Probe keys -> bucket bounds -> candidate rows -> verified hits.

    key_needles: the needles as the tables see them (parity-split or the needles themselves).
    Needles with the same substring key in a table share its probes (the dihedral variants
    of a PDQ hash do, under the parity-split layout), at the radius mih_plan gives that key;
    a candidate is verified once against all the needles that share its probe.
    Every access of stages 2-4 is a likely cache miss into a table far larger than the
    cache; each stage prefetches PREFETCH_AHEAD items ahead so the misses overlap."""
    cdef int g
    cdef int64_t p, i, total = 0
    cdef Probe *pr
    cdef KeyGroup *kg
    s.nprobes = 0
    s.ncand = 0
    # stage 1: the distinct keys of each table and their probe radii, then the probes
    if mih_plan(key_needles, m, nw, radius, nsub, starts, widths, n, s):
        s.failed = 1
        return
    total = 0
    for g in range(s.ngroups):
        kg = &s.groups[g]
        if kg.radius >= 0:
            total += ball_size(widths[kg.table], kg.radius)
    if grow(<void **> &s.probes, &s.probes_cap, total, sizeof(Probe)):
        s.failed = 1
        return
    for g in range(s.ngroups):
        kg = &s.groups[g]
        if kg.radius >= 0:
            enumerate_probes(s.probes, &s.nprobes, kg.table, kg.needles, kg.key,
                             widths[kg.table], kg.radius, 0)
    total = 0
    # stage 2: bucket bounds
    for p in range(s.nprobes):
        if p + PREFETCH_AHEAD < s.nprobes:
            pr = &s.probes[p + PREFETCH_AHEAD]
            hm_prefetch(offsets + table_starts[pr.table] + pr.key)
        pr = &s.probes[p]
        pr.lo = offsets[table_starts[pr.table] + pr.key]
        pr.hi = offsets[table_starts[pr.table] + pr.key + 1]
        total += pr.hi - pr.lo
    if grow(<void **> &s.cand, &s.cand_cap, total, sizeof(int64_t)) or \
            grow(<void **> &s.cand_needles, &s.cand_needles_cap, total, sizeof(uint8_t)):
        s.failed = 1
        return
    # stage 3: candidate rows of every non-empty bucket
    for p in range(s.nprobes):
        if p + PREFETCH_AHEAD < s.nprobes:
            pr = &s.probes[p + PREFETCH_AHEAD]
            if pr.hi > pr.lo:
                hm_prefetch(rows + pr.table * n + pr.lo)
        pr = &s.probes[p]
        for i in range(pr.lo, pr.hi):
            s.cand[s.ncand] = rows[pr.table * n + i]
            s.cand_needles[s.ncand] = pr.needles
            s.ncand += 1
    # stage 4: verify each candidate once against the needles of its probe
    verify_candidate_sets(needles, codes, nw, s.cand, s.cand_needles, s.ncand, radius, out)


cdef void verify_candidate_sets(const uint64_t *needles, const uint64_t *db, int nw,
                                const int64_t *rows, const uint8_t *masks, int64_t count,
                                int radius, HitList *out) noexcept nogil:
    """Push (row, min distance, lowest needle achieving it) over each row's own needle set
    (masks[i]): one pass, each row loaded once, prefetched PREFETCH_AHEAD rows ahead."""
    cdef int32_t best[BLOCK_ROWS]
    cdef int8_t arg[BLOCK_ROWS]
    cdef hm_gathermin_fn gathermin = hm_get_active().gathermin
    cdef int64_t b0 = 0, nb, i
    while b0 < count:
        nb = min(<int64_t> BLOCK_ROWS, count - b0)
        gathermin(needles, db, rows + b0, masks + b0, nb, count - b0, PREFETCH_AHEAD, nw, best,
                  arg)
        for i in range(nb):
            if best[i] <= radius:
                hits_push(out, rows[b0 + i], best[i], arg[i])
        b0 += nb


def _probe_key_codes(needles, int nsub, int split_parity):
    """The needles as the tables see them: split (and mixed) directly, no intermediate
    arrays; the needles themselves without a parity split."""
    if not split_parity:
        return needles
    if needles.shape[2] != 32:
        raise ValueError("parity split needs 256-bit codes")
    cdef cnp.ndarray seg
    cdef int64_t k, nk = needles.shape[0] * needles.shape[1]
    key_needles = np.empty_like(needles)
    cdef const uint8_t *pnb = <const uint8_t *> cnp.PyArray_DATA(needles)
    cdef uint64_t *pkw = <uint64_t *> cnp.PyArray_DATA(key_needles)
    if split_parity == SPLIT_MIXED:
        seg = _mix_segments(nsub)
        for k in range(nk):
            parity_mix_one(pnb + 32 * k, pkw + 4 * k,
                           <const int32_t *> cnp.PyArray_DATA(seg), seg.shape[0])
    else:
        for k in range(nk):
            parity_split_one(pnb + 32 * k, pkw + 4 * k)
    return key_needles


@cython.wraparound(True)
def mih_probe_plan(needles, starts, widths, n, radius, int split_parity=0):
    """The probe radii mih_range_search_multi uses for one query's needles (m, nbytes) on
    tables of n rows: int32 (nsub, m), entry (t, j) = the radius around needle j's key in
    table t (-1: not probed). Needles sharing a key in a table share its entry. Every
    needle's plan satisfies the pigeonhole condition (see mih_plan)."""
    needles = _as_needles(needles, np.asarray(needles).shape[-1])
    if needles.shape[0] != 1:
        raise ValueError("one query's needles: shape (m, nbytes)")
    key_needles = _probe_key_codes(needles, len(starts), split_parity)
    cdef cnp.ndarray st = np.ascontiguousarray(starts, dtype=np.int32)
    cdef cnp.ndarray wd = np.ascontiguousarray(widths, dtype=np.int32)
    cdef int nsub = st.shape[0], m = needles.shape[1], nw = needles.shape[2] // 8
    if np.any(wd < 1) or np.any(wd > 32) or (nsub and st[nsub - 1] + wd[nsub - 1] > nw * 64):
        raise ValueError("substrings must lie inside the code and be 1..32 bits wide")
    cdef MihScratch s
    memset(&s, 0, sizeof(MihScratch))
    out = np.full((nsub, m), -1, dtype=np.int32)
    cdef int g, j
    try:
        if mih_plan(_words(key_needles), m, nw, int(radius), nsub,
                    <const int32_t *> cnp.PyArray_DATA(st), <const int32_t *> cnp.PyArray_DATA(wd),
                    int(n), &s):
            raise MemoryError()
        for g in range(s.ngroups):
            for j in range(m):
                if (s.groups[g].needles >> j) & 1:
                    out[s.groups[g].table, j] = s.groups[g].radius
    finally:
        free(s.groups)
        free(s.heap)
    return out


def mih_range_search_multi(needles, codes, starts, widths, offsets, rows, radius,
                           threads=None, int split_parity=0):
    """Exact range search through MIH tables built by mih_build on `codes`.

    Same arguments and result as range_search_multi(needles, codes, radius); split_parity as
    given to mih_build (the needles are split the same way to form the probe keys, and
    verified unsplit against `codes`)."""
    codes = _as_codes(codes, "codes")
    needles = _as_needles(needles, codes.shape[1])
    key_needles = _probe_key_codes(needles, len(starts), split_parity)
    cdef cnp.ndarray st = np.ascontiguousarray(starts, dtype=np.int32)
    cdef cnp.ndarray wd = np.ascontiguousarray(widths, dtype=np.int32)
    cdef cnp.ndarray ts = mih_table_starts(wd)
    cdef cnp.ndarray off = np.ascontiguousarray(offsets, dtype=np.uint32)
    cdef cnp.ndarray rw = np.ascontiguousarray(rows, dtype=np.uint32)
    cdef int64_t nq = needles.shape[0], n = codes.shape[0]
    cdef int nsub = st.shape[0]
    if off.shape[0] != ts[nsub] or rw.shape[0] != nsub or rw.shape[1] != n:
        raise ValueError("MIH tables do not match the codes and layout")
    cdef int m = needles.shape[1], nw = codes.shape[1] // 8, r = int(radius)
    cdef int nthreads = _threads(threads)
    cdef HitList *hits = hits_new(nq)
    cdef MihScratch *scratch = <MihScratch *> malloc(nthreads * sizeof(MihScratch))
    if scratch == NULL:
        hits_free(hits, nq)
        raise MemoryError()
    memset(scratch, 0, nthreads * sizeof(MihScratch))
    cdef const uint64_t *pn = _words(needles)
    cdef const uint64_t *pk = _words(key_needles)
    cdef const uint64_t *pc = _words(codes)
    cdef const int32_t *pst = <const int32_t *> cnp.PyArray_DATA(st)
    cdef const int32_t *pwd = <const int32_t *> cnp.PyArray_DATA(wd)
    cdef const int64_t *pts = <const int64_t *> cnp.PyArray_DATA(ts)
    cdef const uint32_t *po = <const uint32_t *> cnp.PyArray_DATA(off)
    cdef const uint32_t *pr = <const uint32_t *> cnp.PyArray_DATA(rw)
    cdef int64_t q
    cdef int tid = 0, failed = 0
    try:
        if r >= 0 and n > 0 and m > 0:
            # never more threads than queries: an idle thread still joins (and, on a busy
            # machine, delays) the parallel region
            with nogil, parallel(num_threads=min(nthreads, nq)):
                tid = openmp_thread_num()
                for q in prange(nq, schedule="dynamic"):
                    mih_query(pn + q * m * nw, pk + q * m * nw, m, pc, nw, r, nsub, pst, pwd,
                              pts, po, pr, n, &scratch[tid], &hits[q])
            for tid in range(nthreads):
                failed |= scratch[tid].failed
            if failed:
                raise MemoryError("out of memory in MIH search")
        result = hits_to_csr(hits, nq, 1, True)
    finally:
        for tid in range(nthreads):
            free(scratch[tid].probes)
            free(scratch[tid].groups)
            free(scratch[tid].heap)
            free(scratch[tid].cand)
            free(scratch[tid].cand_needles)
        free(scratch)
        hits_free(hits, nq)
    return sort_unique_hits(*result)


cdef extern from "<omp.h>":
    int openmp_thread_num "omp_get_thread_num"() nogil
